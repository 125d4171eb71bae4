"""a customer's history (orders, their lines and tenders, returns, shared devices/postcodes/cards) as
index-only scans

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28 06:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, index, columns now, columns before; None = the index is new)
CHANGES = [
    ('orders', 'ix_orders_customer_placed',
     ['customer_id', 'placed_at', 'order_id', 'device_id', 'ship_postcode'], ['customer_id', 'placed_at']),
    ('orders', 'ix_orders_device', ['device_id', 'customer_id', 'placed_at'], ['device_id']),
    ('orders', 'ix_orders_ship_postcode', ['ship_postcode', 'customer_id', 'placed_at'], ['ship_postcode']),
    ('order_lines', 'ix_order_lines_covering',
     ['order_id', 'line_no', 'quantity', 'unit_price', 'discount'], None),
    ('payments', 'ix_payments_order_id', ['order_id', 'method', 'amount', 'card_fingerprint'], ['order_id']),
    ('payments', 'ix_payments_card_fingerprint', ['card_fingerprint', 'order_id'], ['card_fingerprint']),
    ('returns', 'ix_returns_customer_requested',
     ['customer_id', 'requested_at', 'return_id', 'location_id'], ['customer_id', 'requested_at']),
    ('return_lines', 'ix_return_lines_covering',
     ['return_id', 'line_no', 'order_id', 'order_line_no', 'sku', 'quantity', 'reason'], None),
]


def upgrade() -> None:
    for table, name, columns, before in CHANGES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            if before is not None:
                batch_op.drop_index(name)
            batch_op.create_index(name, columns, unique=False)


def downgrade() -> None:
    for table, name, _columns, before in reversed(CHANGES):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(name)
            if before is not None:
                batch_op.create_index(name, before, unique=False)
