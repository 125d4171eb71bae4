"""return_events is append-only: UPDATE and DELETE are refused by a trigger (PostgreSQL and SQLite)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 19:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MESSAGE = 'return_events is append-only: {} is refused'


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(
            """
            CREATE FUNCTION return_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              RAISE EXCEPTION 'return_events is append-only: % is refused', TG_OP
                USING ERRCODE = 'restrict_violation';
            END $$"""
        )
        op.execute(
            'CREATE TRIGGER return_events_append_only BEFORE UPDATE OR DELETE ON return_events '
            'FOR EACH ROW EXECUTE FUNCTION return_events_append_only()'
        )
        return
    for command in ('UPDATE', 'DELETE'):
        op.execute(
            f'CREATE TRIGGER return_events_no_{command.lower()} BEFORE {command} ON return_events '
            f"BEGIN SELECT RAISE(ABORT, '{MESSAGE.format(command)}'); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('DROP TRIGGER return_events_append_only ON return_events')
        op.execute('DROP FUNCTION return_events_append_only()')
        return
    for command in ('UPDATE', 'DELETE'):
        op.execute(f'DROP TRIGGER return_events_no_{command.lower()}')
