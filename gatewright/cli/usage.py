"""``gatewright usage``: the account's requests, newest first, with totals."""

from __future__ import annotations

from datetime import UTC, datetime

import typer
from rich.table import Table

from gatewright.cli.store import ACCOUNT_OPTION, account_id, console, credits_text, run, when
from gatewright.core.accounts import Accounts, UsageFilter


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def usage(
    since: datetime = typer.Option(None, help="From this UTC date or time (inclusive)."),
    until: datetime = typer.Option(None, help="Until this UTC date or time (exclusive)."),
    model: str = typer.Option(None, help="Only this model id."),
    key: str = typer.Option(None, help="Only this key prefix."),
    status: str = typer.Option(None, help="Only ok, aborted (client left) or error (not billed)."),
    limit: int = typer.Option(50, min=1, max=10_000, help="How many requests to list."),
    account: int = ACCOUNT_OPTION,
) -> None:
    """List requests with their tokens and credits, and the totals of everything that matches."""

    async def action(accounts: Accounts) -> None:
        target = await account_id(accounts, account)
        flt = UsageFilter(since=_utc(since), until=_utc(until), model=model, key_prefix=key, status=status, limit=limit)
        rows = await accounts.usage(target, flt)
        totals = await accounts.usage_totals(target, flt)
        table = Table(title=f"usage of account {target}: {len(rows)} of {totals.requests} requests")
        for column, justify in (
            ("time (UTC)", "left"),
            ("key", "left"),
            ("model", "left"),
            ("status", "left"),
            ("input", "right"),
            ("cached", "right"),
            ("output", "right"),
            ("credits", "right"),
        ):
            table.add_column(column, justify=justify, overflow="fold")  # type: ignore[arg-type]
        for row in rows:
            table.add_row(
                when(row.created_at),
                row.key_prefix,
                row.model,
                row.status,
                f"{row.input_tokens:,}",
                f"{row.cached_tokens:,}",
                f"{row.output_tokens:,}",
                f"{row.credits:,}",
            )
        table.add_section()
        table.add_row(
            "total",
            "",
            "",
            "",
            f"{totals.input_tokens:,}",
            f"{totals.cached_tokens:,}",
            f"{totals.output_tokens:,}",
            f"{totals.credits:,}",
        )
        console().print(table)
        console().print(f"spent {credits_text(totals.credits)}")

    run(action)
