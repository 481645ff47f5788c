"""operator controls: pause, skip, pause after failures, why a run did not run

Pause with a note and an end, skip the next occurrences, pause after failures, and the reason a
history row was skipped or missed.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(
            sa.Column("schedule_paused", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("schedule_pause_note", sa.Text(), nullable=True))
        batch.add_column(
            sa.Column("schedule_paused_until", sa.DateTime(timezone=True), nullable=True)
        )
        batch.add_column(sa.Column("pause_after_failures", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column("consecutive_failures", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("schedule_skip_count", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("schedule_skip_by", sa.String(255), nullable=True))
    with op.batch_alter_table("task_runs") as batch:
        batch.add_column(sa.Column("reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("task_runs") as batch:
        batch.drop_column("reason")
    with op.batch_alter_table("tasks") as batch:
        for column in (
            "schedule_skip_by",
            "schedule_skip_count",
            "consecutive_failures",
            "pause_after_failures",
            "schedule_paused_until",
            "schedule_pause_note",
            "schedule_paused",
        ):
            batch.drop_column(column)
