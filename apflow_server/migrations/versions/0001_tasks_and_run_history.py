"""tasks and run history

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TIME = sa.DateTime(timezone=True)
ENABLED_PG = sa.text("schedule_enabled")
ENABLED_SQLITE = sa.text("schedule_enabled = 1")
RUNNING = sa.text("status = 'running'")


def upgrade() -> None:
    op.create_table(
        "tasks",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("parent_id", sa.String(64), nullable=True),
        sa.Column("user_id", sa.String(255), nullable=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("schemas", sa.JSON(), nullable=False),
        sa.Column("dependencies", sa.JSON(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.Column("started_at", UTC_TIME, nullable=True),
        sa.Column("completed_at", UTC_TIME, nullable=True),
        sa.Column("schedule_type", sa.String(16), nullable=True),
        sa.Column("schedule_expression", sa.String(255), nullable=True),
        sa.Column("schedule_timezone", sa.String(64), nullable=False),
        sa.Column("schedule_enabled", sa.Boolean(), nullable=False),
        sa.Column("schedule_start_at", UTC_TIME, nullable=True),
        sa.Column("schedule_end_at", UTC_TIME, nullable=True),
        sa.Column("max_runs", sa.Integer(), nullable=True),
        sa.Column("run_count", sa.Integer(), nullable=False),
        sa.Column("next_run_at", UTC_TIME, nullable=True),
        sa.Column("last_run_at", UTC_TIME, nullable=True),
        sa.Column("schedule_misfire", sa.String(16), nullable=False),
        sa.Column("schedule_overlap", sa.String(16), nullable=False),
        sa.Column("schedule_jitter_seconds", sa.Integer(), nullable=False),
        sa.Column("schedule_anchor_at", UTC_TIME, nullable=True),
        sa.Column("due_at", UTC_TIME, nullable=True),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["tasks.id"], name="fk_tasks_parent_id_tasks", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_tasks"),
    )
    op.create_index("ix_tasks_parent_id", "tasks", ["parent_id"])
    op.create_index("ix_tasks_user_id", "tasks", ["user_id"])
    op.create_index(
        "ix_tasks_due",
        "tasks",
        ["due_at"],
        postgresql_where=ENABLED_PG,
        sqlite_where=ENABLED_SQLITE,
    )
    op.create_index(
        "ix_tasks_user_due",
        "tasks",
        ["user_id", "due_at"],
        postgresql_where=ENABLED_PG,
        sqlite_where=ENABLED_SQLITE,
    )

    op.create_table(
        "task_runs",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=True),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("scheduled_for", UTC_TIME, nullable=True),
        sa.Column("started_at", UTC_TIME, nullable=True),
        sa.Column("finished_at", UTC_TIME, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("instance_id", sa.String(128), nullable=True),
        sa.Column("lease_expires_at", UTC_TIME, nullable=True),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name="fk_task_runs_task_id_tasks", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_task_runs"),
        sa.UniqueConstraint("task_id", "scheduled_for", name="uq_task_runs_occurrence"),
    )
    op.create_index("ix_task_runs_task_created", "task_runs", ["task_id", "created_at"])
    op.create_index(
        "ix_task_runs_running_lease",
        "task_runs",
        ["lease_expires_at"],
        postgresql_where=RUNNING,
        sqlite_where=RUNNING,
    )


def downgrade() -> None:
    op.drop_table("task_runs")
    op.drop_table("tasks")
