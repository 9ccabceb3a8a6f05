"""fast day default language, and its title and description in other languages

Revision ID: 7e6d3b197424
Revises: 9a65d665074f
Create Date: 2026-11-24 01:19:59.243514

"""

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "7e6d3b197424"
down_revision = "9a65d665074f"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("fast_day", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("locale", sa.String(length=10), server_default="en", nullable=False)
        )
        batch_op.add_column(
            sa.Column("translations", sa.JSON(), server_default=sa.text("'{}'"), nullable=False)
        )


def downgrade():
    with op.batch_alter_table("fast_day", schema=None) as batch_op:
        batch_op.drop_column("translations")
        batch_op.drop_column("locale")
