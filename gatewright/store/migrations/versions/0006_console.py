"""console: each usage record's dialect and latency, each key's last use, and the web console's
sessions (so every worker and replica knows them); old usage rows keep null dialect and latency

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 19:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMNs, nullable: old rows read as "not recorded" (SQLite adds them in place).
    op.add_column("usage_records", sa.Column("dialect", sa.String(length=32), nullable=True))
    op.add_column("usage_records", sa.Column("latency_ms", sa.Integer(), nullable=True))
    op.add_column("api_keys", sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "console_sessions",
        sa.Column("id_hash", sa.String(length=64), primary_key=True),  # sha256 of the cookie's id
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("sealed_key", sa.Text(), nullable=False),  # encrypted under the cookie's id
        sa.Column("sealed_playground_key", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_console_sessions_expires_at", "console_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_console_sessions_expires_at", table_name="console_sessions")
    op.drop_table("console_sessions")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("last_used_at")
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("latency_ms")
        batch.drop_column("dialect")
