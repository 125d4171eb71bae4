"""returns.refunded_at: when the refund was issued (the lifecycle's, or carried by imported files)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08 02:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import oms.types

revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('returns', schema=None) as batch_op:
        batch_op.add_column(sa.Column('refunded_at', oms.types.UTCDateTime(timezone=True), nullable=True))
    # returns refunded by the lifecycle before this column existed: their first refund's time
    op.execute(
        'UPDATE returns SET refunded_at = (SELECT MIN(refunds.created_at) FROM refunds '
        'WHERE refunds.return_id = returns.return_id) '
        'WHERE EXISTS (SELECT 1 FROM refunds WHERE refunds.return_id = returns.return_id)'
    )


def downgrade() -> None:
    with op.batch_alter_table('returns', schema=None) as batch_op:
        batch_op.drop_column('refunded_at')
