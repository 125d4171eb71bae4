"""Batches of small reads on the DB-API driver under a SQLAlchemy connection: the request hot path.

Return time needs a dozen small indexed reads (the return's context for the policy, the features for the
model). Through the ORM each costs its own round trip and a compile/cache-key pass; here every statement
of a batch is named-parameter SQL text, translated once per text for the driver, and on PostgreSQL the
whole batch goes in one psycopg pipeline: one network round trip, prepared after a few uses. SQLite
runs them one after another (it is in process). Statements run on the caller's connection, so inside
the caller's transaction.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection

from oms.types import CENT, SQLITE_DATETIME_FORMAT

Statement = tuple[str, dict[str, Any]]

_NAMED = re.compile(r"(?<!:):([a-z_0-9]+)")
_LIST = re.compile(r"\{([a-z_]+):(\d+)\}")  # {name:count}: an expanded IN-list on SQLite
# EPOCH_US(column): a timestamp as int microseconds since the epoch; FLOAT8(column): an amount as a
# float. PostgreSQL converts in the query (an int8 or float8 loads far cheaper than a datetime or a
# Decimal); SQLite hands the stored value over as it is, and the caller converts it.
_EPOCH_US = re.compile(r"EPOCH_US\(([^()]+)\)")
_FLOAT8 = re.compile(r"FLOAT8\(((?:[^()]|\([^()]*\))+)\)")  # one level of nesting: FLOAT8(SUM(x))


@functools.lru_cache(maxsize=512)
def _translate(text: str, postgres: bool) -> str:
    if postgres:
        text = _EPOCH_US.sub(r"(EXTRACT(EPOCH FROM \1) * 1000000)::bigint", text)
        text = _FLOAT8.sub(r"(\1)::float8", text)
        return _NAMED.sub(lambda m: f"%({m.group(1)})s", text)
    text = _FLOAT8.sub(r"\1", _EPOCH_US.sub(r"\1", text))
    return _LIST.sub(lambda m: ", ".join(f":{m.group(1)}{i}" for i in range(int(m.group(2)))), text)


class Driver:
    """Runs named-parameter SQL on the connection's DB-API driver (sqlite3 or psycopg 3)."""

    def __init__(self, connection: Connection) -> None:
        self.raw = connection.connection.driver_connection
        self.postgres = connection.dialect.name == "postgresql"

    def sql(self, text: str) -> str:
        """`text` with :named parameters in the driver's style (cached per text)."""
        return _translate(text, self.postgres)

    def time(self, moment: dt.datetime) -> Any:
        """A point in time as a parameter (compared as text on SQLite, so in its stored format)."""
        moment = moment.astimezone(dt.UTC)
        return moment if self.postgres else moment.replace(tzinfo=None).strftime(SQLITE_DATETIME_FORMAT)

    def in_list(self, name: str, values: Sequence[Any]) -> tuple[str, dict[str, Any]]:
        """`column <fragment>` tests membership in `values`: one array parameter on PostgreSQL (the
        statement text stays the same whatever the count, so it is prepared once), an expanded list on
        SQLite."""
        if self.postgres:
            return f"= ANY(:{name})", {name: list(values)}
        if not values:
            return "IN (NULL)", {}
        return f"IN ({{{name}:{len(values)}}})", {f"{name}{i}": value for i, value in enumerate(values)}

    def run(self, statements: Sequence[Statement], *, end_transaction: bool = False) -> list[list[tuple]]:
        """Execute the statements and fetch all their rows; on PostgreSQL in one pipeline.

        `end_transaction` (PostgreSQL): the pipeline ends with COMMIT, so a transaction that only reads
        takes one round trip in all instead of two (the caller's own commit then has nothing to do).
        Only for a caller that reads nothing more in this transaction and wrote nothing before."""
        if not self.postgres:
            cursor = self.raw.cursor()
            try:
                return [cursor.execute(self.sql(text), params).fetchall() for text, params in statements]
            finally:
                cursor.close()
        cursors = [self.raw.cursor() for _ in range(len(statements) + end_transaction)]
        try:
            with self.raw.pipeline():
                for cursor, (text, params) in zip(cursors, statements, strict=False):  # COMMIT's is last
                    cursor.execute(self.sql(text), params)
                if end_transaction:
                    cursors[-1].execute("COMMIT")
            return [cursor.fetchall() for cursor, _ in zip(cursors, statements, strict=False)]
        finally:
            for cursor in cursors:
                cursor.close()


def read_time(value: Any) -> dt.datetime | None:
    """A timestamp as either driver returns it (text on SQLite) as an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def read_money(value: Any) -> Decimal | None:
    """An amount as either driver returns it (float on SQLite) as a Decimal with 2 places."""
    if value is None:
        return None
    return Decimal(str(value)).quantize(CENT)
