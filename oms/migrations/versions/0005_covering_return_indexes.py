"""store and employee window counts as index-only scans

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 22:35:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('returns', schema=None) as batch_op:
        batch_op.drop_index('ix_returns_location_requested')
        batch_op.drop_index('ix_returns_employee_requested')
        batch_op.create_index('ix_returns_location_requested', ['location_id', 'requested_at', 'order_id'], unique=False)
        batch_op.create_index('ix_returns_employee_requested', ['employee_id', 'requested_at', 'order_id', 'refund_method'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('returns', schema=None) as batch_op:
        batch_op.drop_index('ix_returns_location_requested')
        batch_op.drop_index('ix_returns_employee_requested')
        batch_op.create_index('ix_returns_location_requested', ['location_id', 'requested_at'], unique=False)
        batch_op.create_index('ix_returns_employee_requested', ['employee_id', 'requested_at'], unique=False)
