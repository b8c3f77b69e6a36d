"""accounts: the operator apart from the accounts; accounts disabled or deleted; who made a
ledger entry; redemption codes; key policies (models, expiry); usage by time across accounts

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 17:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # Plain ADD COLUMNs (SQLite does them in place; a batch copy would trip the foreign keys).
    op.add_column("accounts", sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("accounts", sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("ledger", sa.Column("actor", sa.String(length=64), nullable=True))
    op.add_column("api_keys", sa.Column("models", sa.JSON(), nullable=True))
    op.add_column("api_keys", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_usage_created", "usage_records", ["created_at"])
    op.create_table(
        "operator_keys",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("prefix", sa.String(length=8), nullable=False, unique=True),
        sa.Column("key_hash", sa.String(length=64), nullable=False, unique=True),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "redemption_codes",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("prefix", sa.String(length=8), nullable=False, unique=True),
        sa.Column("code_hash", sa.String(length=64), nullable=False, unique=True),
        sa.Column("credits", sa.BigInteger(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("redeemed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("redeemed_by", Id, sa.ForeignKey("accounts.id"), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("redemption_codes")
    op.drop_table("operator_keys")
    op.drop_index("ix_usage_created", table_name="usage_records")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("expires_at")
        batch.drop_column("models")
    with op.batch_alter_table("ledger") as batch:
        batch.drop_column("actor")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("deleted_at")
        batch.drop_column("disabled")
