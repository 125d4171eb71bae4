"""a return awaits payment while the customer owes for a dearer exchange; exchange_payments records it

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 23:37:37
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import oms.types

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BEFORE = (
    'requested', 'authorized', 'pending_review', 'rejected', 'received', 'inspected', 'completed',
    'cancelled', 'expired',
)
AFTER = (*BEFORE[:5], 'awaiting_payment', *BEFORE[5:])


def _statuses(statuses: tuple[str, ...]) -> None:
    quoted = ', '.join(f"'{s}'" for s in statuses)
    with op.batch_alter_table('returns', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_returns_status'), type_='check')
        batch_op.create_check_constraint('status', f'status IN ({quoted})')


def upgrade() -> None:
    _statuses(AFTER)
    op.create_table('exchange_payments',
    sa.Column('return_id', sa.String(length=64).with_variant(sa.String(length=64, collation='C'), 'postgresql'), nullable=False),
    sa.Column('paid_at', oms.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('method', sa.String(length=16), nullable=False),
    sa.Column('amount', oms.types.Money(precision=12, scale=2), nullable=False),
    sa.Column('reference', sa.String(length=64), nullable=True),
    sa.Column('actor', sa.String(length=64), nullable=True),
    sa.CheckConstraint("method IN ('card', 'gift_card', 'store_credit', 'cash', 'loyalty_points', 'paypal', 'other')", name=op.f('ck_exchange_payments_method')),
    sa.CheckConstraint('amount > 0', name=op.f('ck_exchange_payments_amount_positive')),
    sa.ForeignKeyConstraint(['return_id'], ['returns.return_id'], name=op.f('fk_exchange_payments_return_id_returns')),
    sa.PrimaryKeyConstraint('return_id', name=op.f('pk_exchange_payments'))
    )


def downgrade() -> None:
    op.drop_table('exchange_payments')
    op.execute("UPDATE returns SET status = 'received' WHERE status = 'awaiting_payment'")
    _statuses(BEFORE)
