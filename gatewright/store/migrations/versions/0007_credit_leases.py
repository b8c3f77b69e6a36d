"""leases: credits a gateway process holds in bulk for one (account, key) and reserves against in
memory (core.ledger's credit leases), closed by any replica once its holder stops extending it

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 19:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("id", sa.String(length=64), primary_key=True),
        sa.Column("account_id", Id, sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("key_id", Id, sa.ForeignKey("api_keys.id"), nullable=False),
        sa.Column("credits", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_leases_status_expires", "leases", ["status", "expires_at"])


def downgrade() -> None:
    op.drop_index("ix_leases_status_expires", table_name="leases")
    op.drop_table("leases")
