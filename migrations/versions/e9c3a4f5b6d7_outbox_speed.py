"""outbox: an index for the expiry sweep, run before every batch a sender claims

Revision ID: e9c3a4f5b6d7
Revises: d8b2f3e4a5c6
Create Date: 2026-11-24 04:30:00

Without it the sweep for queued rows past their expiry reads every queued row: with a
100,000-copy campaign waiting, a third of a second before every batch of 100.
"""

from alembic import op


# revision identifiers, used by Alembic.
revision = "e9c3a4f5b6d7"
down_revision = "d8b2f3e4a5c6"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("outbox_message", schema=None) as batch_op:
        batch_op.create_index(
            "ix_outbox_message_state_expires", ["state", "expires_at"], unique=False
        )


def downgrade():
    with op.batch_alter_table("outbox_message", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_message_state_expires")
