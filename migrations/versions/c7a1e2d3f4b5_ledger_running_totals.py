"""running totals of the ledger and a count of each day's donors

Revision ID: c7a1e2d3f4b5
Revises: 7e6d3b197424
Create Date: 2026-11-24 04:20:00

The tables are filled from the existing rows here, as ``ledger_totals.rebuild`` would, so a
database upgraded in place reads the same figures as before.
"""

import hashlib
from collections import Counter

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "c7a1e2d3f4b5"
down_revision = "7e6d3b197424"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "ledger_total",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fast_day_id", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("aid_group_key", sa.Integer(), nullable=False),
        sa.Column("split_version_key", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("entries", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["fast_day_id"], ["fast_day.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "fast_day_id",
            "currency",
            "aid_group_key",
            "split_version_key",
            "kind",
            "slot",
            name="uq_ledger_total_key",
        ),
    )
    with op.batch_alter_table("ledger_total", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ledger_total_aid_group_key"), ["aid_group_key"], unique=False
        )
    op.create_table(
        "day_donor",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fast_day_id", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("donor_digest", sa.String(length=64), nullable=False),
        sa.Column("gifts", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["fast_day_id"], ["fast_day.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("fast_day_id", "currency", "donor_digest", name="uq_day_donor_key"),
    )

    with op.batch_alter_table("pledge", schema=None) as batch_op:
        batch_op.create_index("ix_pledge_day_status", ["fast_day_id", "status"], unique=False)

    op.execute(
        """
        INSERT INTO ledger_total (fast_day_id, currency, aid_group_key, split_version_key,
                                  kind, slot, total, entries)
        SELECT fast_day_id, currency, COALESCE(aid_group_id, 0), COALESCE(split_version, 0),
               kind, 0, SUM(amount_minor), COUNT(*)
        FROM ledger_entry
        GROUP BY fast_day_id, currency, COALESCE(aid_group_id, 0),
                 COALESCE(split_version, 0), kind
        """
    )
    bind = op.get_bind()
    gifts = Counter(
        (day_id, currency, hashlib.sha256(email.encode()).hexdigest())
        for day_id, currency, email in bind.execute(
            sa.text("SELECT fast_day_id, currency, email FROM pledge WHERE status = 'succeeded'")
        )
    )
    if gifts:
        bind.execute(
            sa.text(
                "INSERT INTO day_donor (fast_day_id, currency, donor_digest, gifts)"
                " VALUES (:day, :currency, :digest, :gifts)"
            ),
            [
                {"day": day, "currency": currency, "digest": digest, "gifts": n}
                for (day, currency, digest), n in gifts.items()
            ],
        )
        donors = Counter((day, currency) for day, currency, _digest in gifts)
        bind.execute(
            sa.text(
                "INSERT INTO ledger_total (fast_day_id, currency, aid_group_key,"
                " split_version_key, kind, slot, total, entries)"
                " VALUES (:day, :currency, 0, 0, 'donors', 0, :n, :n)"
            ),
            [{"day": day, "currency": currency, "n": n} for (day, currency), n in donors.items()],
        )


def downgrade():
    with op.batch_alter_table("pledge", schema=None) as batch_op:
        batch_op.drop_index("ix_pledge_day_status")
    op.drop_table("day_donor")
    with op.batch_alter_table("ledger_total", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ledger_total_aid_group_key"))
    op.drop_table("ledger_total")
