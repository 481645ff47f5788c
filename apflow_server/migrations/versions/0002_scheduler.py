"""scheduler: run ownership, manual trigger requests, instance heartbeats

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TIME = sa.DateTime(timezone=True)
REQUESTED = sa.text("trigger_requested_at IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("current_run_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("trigger_requested_at", UTC_TIME, nullable=True))
    op.create_index(
        "ix_tasks_trigger_requested",
        "tasks",
        ["trigger_requested_at"],
        postgresql_where=REQUESTED,
        sqlite_where=REQUESTED,
    )
    op.create_table(
        "scheduler_instances",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("user_filter", sa.String(255), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("started_at", UTC_TIME, nullable=False),
        sa.Column("heartbeat_at", UTC_TIME, nullable=False),
        sa.Column("stats", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_scheduler_instances"),
    )
    op.create_index("ix_scheduler_instances_heartbeat_at", "scheduler_instances", ["heartbeat_at"])


def downgrade() -> None:
    op.drop_table("scheduler_instances")
    op.drop_index("ix_tasks_trigger_requested", "tasks")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("trigger_requested_at")
        batch.drop_column("current_run_id")
