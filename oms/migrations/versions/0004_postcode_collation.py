"""postcodes compare bytewise on PostgreSQL (collation "C"), like the ids they are joined with

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 22:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

POSTCODE = sa.String(length=16).with_variant(sa.String(length=16, collation='C'), 'postgresql')


def upgrade() -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return  # SQLite compares bytewise already
    for column in ('ship_postcode', 'bill_postcode'):
        op.alter_column('orders', column, type_=POSTCODE, existing_type=sa.String(length=16), existing_nullable=True)


def downgrade() -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return
    for column in ('ship_postcode', 'bill_postcode'):
        op.alter_column('orders', column, type_=sa.String(length=16), existing_nullable=True)
