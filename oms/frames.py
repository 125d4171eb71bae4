"""The state tables as typed pandas DataFrames, fast on both backends (for features and analytics).

Timestamps come back as `datetime64[us, UTC]`, money as float64 (analytics only: the lifecycle keeps
Decimal), counts as int64 (Int64 where nullable), text as strings. PostgreSQL streams with
`COPY (SELECT ...) TO STDOUT` parsed by Arrow; SQLite reads raw rows without per-value type processing.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
from sqlalchemy import Boolean, Connection, CursorResult, Engine, Integer, Numeric, inspect
from sqlalchemy.sql.sqltypes import DateTime

from oms.tables import metadata


def _kind(column) -> str:
    kind = column.type
    impl = getattr(kind, "impl", kind)
    if isinstance(impl, DateTime):
        return "timestamp"
    if isinstance(impl, Numeric):
        return "money"
    if isinstance(impl, Boolean):
        return "bool"
    if isinstance(impl, Integer):
        return "int"
    return "text"


def load_frame(
    bind: Engine | Connection,
    table: str,
    columns: Sequence[str] | None = None,
    where: str | None = None,
    params: dict | None = None,
) -> pd.DataFrame:
    """Rows of `table` (optionally only `columns`, filtered by a SQL `where` with bound `params`)."""
    if isinstance(bind, Engine):
        with bind.connect() as connection:
            return load_frame(connection, table, columns, where, params)
    spec = metadata.tables[table]
    names = list(columns) if columns is not None else [c.name for c in spec.columns]
    kinds = {name: _kind(spec.c[name]) for name in names}
    if bind.dialect.name == "postgresql" and not params:
        frame = _copy_postgres(bind, table, names, kinds, where)
    else:
        sql = f"SELECT {', '.join(names)} FROM {table}" + (f" WHERE {where}" if where else "")
        result = bind.exec_driver_sql(sql, params or {}) if params is not None else bind.exec_driver_sql(sql)
        frame = pd.DataFrame(plain_rows(result), columns=names)
    return _typed(frame, kinds)


def plain_rows(result: CursorResult) -> list[tuple]:
    """Every row of `result` as the driver's own tuples, and the result closed: for a statement whose
    columns SQLAlchemy does not convert (`exec_driver_sql`, or `text()` without typed columns), the same
    values as its `Row`s.

    A frame is built from these, never from `Row`s: pandas 3 takes a list of rows that are not tuples
    down its "last ditch" path, which asks each row for a `dtype` attribute first, and a `Row` answers
    a missing attribute by raising (through its key lookup). On 200,000 SQLite rows of 4 columns that
    took 2.3 s against 0.35 s from the driver's tuples (measured on the 2026-12-03 machine)."""
    with result:
        cursor = result.cursor
        if cursor is None:  # already fetched or closed
            return [tuple(row) for row in result]
        return cursor.fetchall()


def _copy_postgres(
    connection: Connection, table: str, names: list[str], kinds: dict[str, str], where: str | None
) -> pd.DataFrame:
    select_list = ", ".join(
        f"{name}::double precision AS {name}"
        if kinds[name] == "money"
        else f"{name}::text AS {name}"
        if kinds[name] == "timestamp"
        else name
        for name in names
    )
    sql = (
        f"COPY (SELECT {select_list} FROM {table}"
        + (f" WHERE {where}" if where else "")
        + ") TO STDOUT WITH (FORMAT csv, HEADER)"
    )
    buffer = io.BytesIO()
    raw = connection.connection.driver_connection
    with raw.cursor() as cursor, cursor.copy(sql) as copy:
        for block in copy:
            buffer.write(block)
    if buffer.tell() == 0:
        return pd.DataFrame({name: [] for name in names})
    buffer.seek(0)
    types = {name: pa.string() for name in names if kinds[name] in ("text", "timestamp")}
    options = pa_csv.ConvertOptions(
        column_types=types, strings_can_be_null=True, quoted_strings_can_be_null=False
    )
    return pa_csv.read_csv(buffer, convert_options=options).to_pandas()


def _typed(frame: pd.DataFrame, kinds: dict[str, str]) -> pd.DataFrame:
    for name, kind in kinds.items():
        values = frame[name]
        if kind == "timestamp":
            frame[name] = pd.to_datetime(values, utc=True, format="ISO8601").dt.as_unit("us")
        elif kind == "money":
            frame[name] = pd.to_numeric(values).astype("float64")
        elif kind == "int":
            numbers = pd.to_numeric(values)
            frame[name] = numbers.astype("int64") if not numbers.isna().any() else numbers.astype("Int64")
        elif kind == "bool":
            frame[name] = values.map(
                lambda v: None if v is None or v != v else v in (True, 1, "t", "true")
            ).astype("boolean")
        else:
            frame[name] = values.astype("string")
    return frame


def table_names(bind: Engine | Connection) -> list[str]:
    return inspect(bind).get_table_names()
