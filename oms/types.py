"""Column types shared by every table: UTC timestamps and money.

SQLite has no time zone or decimal type, so these decorators make both backends behave the same:
timestamps always come back timezone-aware in UTC, money always comes back as `Decimal` with 2 places.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import DateTime, Numeric
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

UTC = dt.UTC
CENT = Decimal("0.01")

# How SQLAlchemy's SQLite dialect stores DATETIME; bulk writers must produce exactly this text so that
# comparisons in SQL (which are string comparisons on SQLite) stay correct.
SQLITE_DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A point in time, stored as UTC; naive inputs are taken to be UTC already."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Money(TypeDecorator[Decimal]):
    """An amount of money with 2 decimal places, `Decimal` in Python, NUMERIC(12,2) in the database."""

    impl = Numeric(12, 2, asdecimal=True)
    cache_ok = True

    def process_bind_param(self, value: Decimal | int | str | None, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        amount = Decimal(value)
        if amount != amount.quantize(CENT):
            raise ValueError(f"money amount {value!r} has more than 2 decimal places")
        return amount.quantize(CENT)

    def process_result_value(self, value: Decimal | float | None, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        # SQLite hands back floats; rounding to the cent recovers the exact stored amount.
        return Decimal(str(value)).quantize(CENT)
