"""UTC time and the spending periods of key limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
RETENTIONS = ("day", "week", "month", "no_reset")


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands datetimes back naive; they were written as UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def period_start(retention: str | None, now: datetime) -> datetime:
    """Start of the spending period containing ``now``; ``no_reset`` never rolls over."""
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if retention == "day":
        return day
    if retention == "week":
        return day - timedelta(days=day.weekday())
    if retention == "month":
        return day.replace(day=1)
    return EPOCH


def month_start(now: datetime) -> datetime:
    return period_start("month", now)


def iso(value: datetime | None) -> str | None:
    value = aware(value)
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z") if value else None
