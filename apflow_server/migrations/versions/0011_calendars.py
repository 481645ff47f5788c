"""business calendars: named sets of closed days that schedules can follow

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "calendars",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("user_id", sa.String(255), nullable=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=True),
        sa.Column("weekend", sa.JSON(), nullable=False),
        sa.Column("country", sa.String(8), nullable=True),
        sa.Column("subdivision", sa.String(16), nullable=True),
        sa.Column("categories", sa.JSON(), nullable=True),
        sa.Column("dates", sa.JSON(), nullable=False),
        sa.Column("ics", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("user_id", "name", name="uq_calendars_user_name"),
    )
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("schedule_calendar", sa.String(100), nullable=True))
        batch.add_column(sa.Column("schedule_calendar_rule", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("schedule_calendar_rule")
        batch.drop_column("schedule_calendar")
    op.drop_table("calendars")
