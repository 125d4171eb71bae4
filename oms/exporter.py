"""`recoup export DIR`: write the state tables back out as a data-contract directory.

The output is what `recoup import` reads: one file per table, contract columns only, rows in key order,
timestamps in ISO 8601 UTC (`...Z`), money with exactly 2 decimal places. In CSV, a text that a
spreadsheet would run as a formula (it begins with = + - @, a tab or a carriage return) gets a leading
apostrophe, which the importer takes off again (`contract.FORMULA_START`); Parquet keeps values as they
are. Streaming in chunks keeps memory bounded on large tables.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from decimal import Decimal
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Connection, Engine, func, select

from oms import contract
from oms.contract import Column, FileSpec
from oms.tables import metadata

Format = Literal["csv", "parquet"]
Progress = Callable[[str, int, int], None]


def _text(column: Column, values: pd.Series) -> pd.Series:
    if column.kind == "timestamp":
        stamps = pd.to_datetime(values, utc=True)
        whole_seconds = bool((stamps.dt.microsecond.fillna(0) == 0).all())
        pattern = "%Y-%m-%dT%H:%M:%SZ" if whole_seconds else "%Y-%m-%dT%H:%M:%S.%fZ"
        return stamps.dt.strftime(pattern).where(stamps.notna(), "")
    if column.kind in ("money", "signed_money"):
        return values.map(lambda v: "" if v is None or pd.isna(v) else f"{Decimal(v):.2f}")
    if column.kind in ("count", "int"):
        return values.map(lambda v: "" if v is None or pd.isna(v) else str(int(v)))
    if column.kind == "bool":
        return values.map(lambda v: "" if v is None or pd.isna(v) else ("true" if v else "false"))
    text = values.map(lambda v: "" if v is None or pd.isna(v) else str(v))
    if column.kind in ("id", "text"):
        text = text.str.replace(contract.FORMULA_START, "'", regex=True)
    return text


def _arrow_type(column: Column) -> pa.DataType:
    return {
        "timestamp": pa.timestamp("us", tz="UTC"),
        "money": pa.decimal128(12, 2),
        "signed_money": pa.decimal128(12, 2),
        "count": pa.int64(),
        "int": pa.int64(),
        "bool": pa.bool_(),
    }.get(column.kind, pa.string())


def _arrow_batch(spec: FileSpec, frame: pd.DataFrame) -> pa.RecordBatch:
    arrays = []
    for column in spec.columns:
        values = frame[column.name]
        kind = _arrow_type(column)
        if column.kind == "timestamp":
            values = pd.to_datetime(values, utc=True)
        cleaned = [None if v is None or (not isinstance(v, str) and pd.isna(v)) else v for v in values]
        arrays.append(pa.array(cleaned, type=kind))
    return pa.RecordBatch.from_arrays(arrays, names=list(spec.names))


def export_directory(
    directory: Path,
    bind: Engine | Connection,
    *,
    fmt: Format = "csv",
    chunk_rows: int = 100_000,
    progress: Progress | None = None,
) -> dict[str, int]:
    """Write every contract table to `directory`; returns the rows written per table."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if isinstance(bind, Engine):
        with bind.connect() as connection:
            return _export(directory, connection, fmt, chunk_rows, progress)
    return _export(directory, bind, fmt, chunk_rows, progress)


def _export(
    directory: Path, connection: Connection, fmt: Format, chunk_rows: int, progress: Progress | None
) -> dict[str, int]:
    written: dict[str, int] = {}
    for spec in contract.FILES:
        table = metadata.tables[spec.table]
        total = connection.execute(select(func.count()).select_from(table)).scalar_one()
        query = select(*[table.c[name] for name in spec.names]).order_by(*[table.c[k] for k in spec.key])
        path = directory / f"{spec.table}.{fmt}"
        tmp = path.with_suffix(path.suffix + ".partial")
        result = connection.execute(
            query, execution_options={"stream_results": True, "yield_per": chunk_rows}
        )
        rows = 0
        writer: pq.ParquetWriter | None = None
        with open(tmp, "w", encoding="utf-8", newline="") if fmt == "csv" else nullcontext() as handle:
            if fmt == "csv":
                handle.write(",".join(spec.names) + "\n")
            for part in result.partitions(chunk_rows):
                frame = pd.DataFrame(part, columns=list(spec.names))
                if fmt == "csv":
                    text = pd.DataFrame({c.name: _text(c, frame[c.name]) for c in spec.columns})
                    text.to_csv(handle, index=False, header=False, lineterminator="\n")
                else:
                    batch = _arrow_batch(spec, frame)
                    writer = writer or pq.ParquetWriter(tmp, batch.schema, compression="zstd")
                    writer.write_batch(batch)
                rows += len(frame)
                if progress:
                    progress(spec.table, rows, total)
        if fmt == "parquet":
            if writer is None:
                schema = pa.schema([(c.name, _arrow_type(c)) for c in spec.columns])
                writer = pq.ParquetWriter(tmp, schema, compression="zstd")
            writer.close()
        if rows == 0:
            tmp.unlink()  # the contract has no empty files: an absent file means "nothing to load"
            path.unlink(missing_ok=True)
        else:
            tmp.replace(path)
        written[spec.table] = rows
    return written
