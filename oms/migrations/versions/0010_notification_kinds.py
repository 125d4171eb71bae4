"""notifications for a return held for review, an exchange created and a return completed

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 19:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BEFORE = ('return_authorized', 'return_received', 'refund_issued', 'return_rejected')
AFTER = (*BEFORE, 'return_pending_review', 'exchange_created', 'return_completed')


def _kinds(kinds: tuple[str, ...]) -> None:
    quoted = ', '.join(f"'{k}'" for k in kinds)
    with op.batch_alter_table('notifications_outbox', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_notifications_outbox_kind'), type_='check')
        batch_op.create_check_constraint('kind', f'kind IN ({quoted})')


def upgrade() -> None:
    _kinds(AFTER)


def downgrade() -> None:
    op.execute(f"DELETE FROM notifications_outbox WHERE kind IN {AFTER[len(BEFORE):]!r}")
    _kinds(BEFORE)
