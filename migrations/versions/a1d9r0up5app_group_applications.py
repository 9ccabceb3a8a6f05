"""aid group applications: contact, funds method, language, review note

Revision ID: a1d9r0up5app
Revises: 9776fc7ee1de
Create Date: 2026-11-23 21:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'a1d9r0up5app'
down_revision = '9776fc7ee1de'
branch_labels = None
depends_on = None


def upgrade():
    # Groups listed before applications existed have no contact yet: empty, not NULL.
    with op.batch_alter_table('aid_group', schema=None) as batch_op:
        batch_op.add_column(sa.Column('contact_name', sa.String(length=200), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('contact_email', sa.String(length=254), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('funds_method', sa.String(length=20), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('funds_details', sa.Text(), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('locale', sa.String(length=10), nullable=False, server_default='en'))
        batch_op.add_column(sa.Column('review_note', sa.Text(), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('reviewed_at', sa.DateTime(), nullable=True))


def downgrade():
    with op.batch_alter_table('aid_group', schema=None) as batch_op:
        batch_op.drop_column('reviewed_at')
        batch_op.drop_column('review_note')
        batch_op.drop_column('locale')
        batch_op.drop_column('funds_details')
        batch_op.drop_column('funds_method')
        batch_op.drop_column('contact_email')
        batch_op.drop_column('contact_name')
