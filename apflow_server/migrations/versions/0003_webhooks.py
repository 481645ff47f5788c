"""webhooks: idempotency keys and the signature replay store

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("task_runs") as batch:
        batch.add_column(sa.Column("idempotency_key", sa.String(255), nullable=True))
        batch.create_unique_constraint("uq_task_runs_idempotency", ["task_id", "idempotency_key"])
    op.create_table(
        "webhook_replays",
        sa.Column("signature_hash", sa.String(64), nullable=False),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("signature_hash", name="pk_webhook_replays"),
    )
    op.create_index("ix_webhook_replays_expires_at", "webhook_replays", ["expires_at"])


def downgrade() -> None:
    op.drop_table("webhook_replays")
    with op.batch_alter_table("task_runs") as batch:
        batch.drop_constraint("uq_task_runs_idempotency", type_="unique")
        batch.drop_column("idempotency_key")
