"""stripe events queued: a state, attempts and a claim, applied by workers after the answer

Revision ID: d8b2f3e4a5c6
Revises: c7a1e2d3f4b5
Create Date: 2026-11-24 04:15:00

Every event stored before this revision was applied inside its request, so it is processed.
"""

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "d8b2f3e4a5c6"
down_revision = "c7a1e2d3f4b5"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("stripe_event", schema=None) as batch_op:
        batch_op.add_column(sa.Column("state", sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column("attempts", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("next_attempt_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("claim_token", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("claimed_until", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("processed_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("last_error", sa.String(length=200), nullable=True))
    op.execute(
        "UPDATE stripe_event SET state = 'processed', attempts = 1, "
        "next_attempt_at = received_at, processed_at = received_at"
    )
    with op.batch_alter_table("stripe_event", schema=None) as batch_op:
        batch_op.alter_column("state", existing_type=sa.String(length=20), nullable=False)
        batch_op.alter_column("attempts", existing_type=sa.Integer(), nullable=False)
        batch_op.alter_column("next_attempt_at", existing_type=sa.DateTime(), nullable=False)
        batch_op.alter_column("outcome", existing_type=sa.String(length=20), nullable=True)
        batch_op.create_index(
            "ix_stripe_event_state_next_attempt_at", ["state", "next_attempt_at"], unique=False
        )


def downgrade():
    # Events still waiting would be lost with their columns: the downgrade refuses them.
    bind = op.get_bind()
    waiting = bind.execute(
        sa.text("SELECT COUNT(*) FROM stripe_event WHERE state <> 'processed'")
    ).scalar()
    if waiting:
        raise RuntimeError(
            f"{waiting} stripe event(s) not processed: run `flask webhooks apply` first"
        )
    with op.batch_alter_table("stripe_event", schema=None) as batch_op:
        batch_op.drop_index("ix_stripe_event_state_next_attempt_at")
        batch_op.alter_column("outcome", existing_type=sa.String(length=20), nullable=False)
        batch_op.drop_column("last_error")
        batch_op.drop_column("processed_at")
        batch_op.drop_column("claimed_until")
        batch_op.drop_column("claim_token")
        batch_op.drop_column("next_attempt_at")
        batch_op.drop_column("attempts")
        batch_op.drop_column("state")
