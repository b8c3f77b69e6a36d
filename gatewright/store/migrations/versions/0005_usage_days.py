"""usage_days: usage summed by day (UTC), account, model and key, kept by the ledger's writer with
each settlement, so a chart of a month reads a few hundred rows instead of every request; filled
from the usage records already stored

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 18:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "usage_days",
        sa.Column("account_id", Id, sa.ForeignKey("accounts.id"), primary_key=True),
        sa.Column("day", sa.String(length=10), primary_key=True),
        sa.Column("model", sa.String(length=200), primary_key=True),
        sa.Column("key_prefix", sa.String(length=8), primary_key=True),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("credits", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_usage_days_day", "usage_days", ["day"])
    if op.get_bind().dialect.name == "postgresql":
        day = "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
    else:
        day = "substr(created_at, 1, 10)"
    op.execute(
        "INSERT INTO usage_days (account_id, day, model, key_prefix, requests, input_tokens, output_tokens, credits) "
        f"SELECT account_id, {day}, model, key_prefix, count(*), sum(input_tokens), sum(output_tokens), sum(credits) "
        f"FROM usage_records GROUP BY account_id, {day}, model, key_prefix"
    )


def downgrade() -> None:
    op.drop_index("ix_usage_days_day", table_name="usage_days")
    op.drop_table("usage_days")
