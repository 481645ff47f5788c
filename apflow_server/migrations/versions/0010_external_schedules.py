"""external schedules (a dead man's switch for what an outside scheduler fires); run.too_long

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(
            sa.Column("schedule_mode", sa.String(16), nullable=False, server_default="internal")
        )
        batch.add_column(sa.Column("trigger_grace_seconds", sa.Integer(), nullable=True))
    with op.batch_alter_table("task_runs") as batch:
        batch.add_column(
            sa.Column("too_long_announced_at", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("task_runs") as batch:
        batch.drop_column("too_long_announced_at")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("trigger_grace_seconds")
        batch.drop_column("schedule_mode")
