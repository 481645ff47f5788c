"""backfills: occurrences of a past period queued for the schedulers

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "backfills",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=True),
        sa.Column("start_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reprocess", sa.String(16), nullable=False),
        sa.Column("order_by", sa.String(16), nullable=False),
        sa.Column("max_concurrent", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("queued", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name="fk_backfills_task_id_tasks", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_backfills"),
    )
    op.create_index("ix_backfills_task_id", "backfills", ["task_id"])
    op.create_index(
        "ix_backfills_active",
        "backfills",
        ["created_at"],
        postgresql_where=sa.text("status = 'active'"),
        sqlite_where=sa.text("status = 'active'"),
    )
    with op.batch_alter_table("task_runs") as batch:
        batch.add_column(sa.Column("backfill_id", sa.String(64), nullable=True))
    op.create_index(
        "ix_task_runs_backfill_queue",
        "task_runs",
        ["backfill_id", "status", "scheduled_for"],
        postgresql_where=sa.text("backfill_id IS NOT NULL"),
        sqlite_where=sa.text("backfill_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_task_runs_backfill_queue", table_name="task_runs")
    with op.batch_alter_table("task_runs") as batch:
        batch.drop_column("backfill_id")
    op.drop_index("ix_backfills_active", table_name="backfills")
    op.drop_index("ix_backfills_task_id", table_name="backfills")
    op.drop_table("backfills")
