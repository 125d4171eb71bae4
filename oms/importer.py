"""`recoup import DIR`: load a data-contract directory (CSV or Parquet, one file per table).

Every file is validated chunk by chunk before anything of it is written: required columns, types,
enums, money with at most 2 decimal places, timestamps (ISO 8601; naive means UTC), duplicate keys,
and references to rows in this load or already in the database. All files of one load are written in
one transaction, so a failed import leaves the database exactly as it was; the error names the file,
the row and the column.

Re-importing is an upsert keyed by each file's contract key: new rows are inserted, rows whose values
changed are updated (only the columns the file carries), identical rows are left untouched, so loading
the same directory twice changes nothing. Large files are streamed in chunks (memory stays bounded) and
PostgreSQL gets the bulk path (COPY into a staging table, then one INSERT ... ON CONFLICT per chunk).
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from sqlalchemy import Connection, Engine, func, select, tuple_
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import AddConstraint, DropConstraint

from oms import contract, invariants
from oms.contract import Column, FileSpec
from oms.errors import ContractError, Problem
from oms.tables import metadata

MAX_PROBLEMS = 20
ANALYZE_AFTER_ROWS = 10_000
MAX_MONEY_CENTS = 999_999_999_999  # NUMERIC(12,2)
MAX_COUNT = 2_000_000_000
KEY_SEPARATOR = "\x1f"
TRUE_WORDS = frozenset({"true", "t", "yes", "y", "1"})
FALSE_WORDS = frozenset({"false", "f", "no", "n", "0"})
MONEY_PATTERN = r"[+-]?\d{1,10}(?:\.\d{0,2}0*)?|[+-]?\.\d{1,2}0*"

Progress = Callable[[str, int, int], None]


@dataclass
class FileReport:
    table: str
    path: Path
    rows: int = 0
    new_rows: int = 0
    seconds: float = 0.0


@dataclass
class ImportReport:
    files: list[FileReport] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def seconds(self) -> float:
        return sum(f.seconds for f in self.files)


# --- finding and reading files -------------------------------------------------------------------


def discover(directory: Path) -> dict[str, Path]:
    """The contract files in `directory`, by table. Names starting with '.' or '_' are ignored."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ContractError([Problem(str(directory), "is not a directory")])
    found: dict[str, Path] = {}
    problems: list[Problem] = []
    expected = ", ".join(f"{spec.table}.csv" for spec in contract.FILES)
    for path in sorted(directory.iterdir()):
        if path.name.startswith((".", "_")) or path.is_dir():
            continue
        table, suffix = path.stem, path.suffix.lower()
        if suffix not in contract.SUFFIXES or table not in contract.BY_TABLE:
            problems.append(
                Problem(path.name, f"is not a data-contract file (expected {expected}, or .parquet)")
            )
        elif table in found:
            problems.append(
                Problem(path.name, f"{table} is given twice ({found[table].name} and {path.name})")
            )
        else:
            found[table] = path
    if problems:
        raise ContractError(problems)
    if not found:
        raise ContractError([Problem(str(directory), f"holds no data-contract files (expected {expected})")])
    return found


class _Source:
    """A file of one table, read in chunks of raw values."""

    name: str
    columns: list[str]
    total_rows: int
    is_csv: bool

    def chunks(self, rows: int, columns: list[str]) -> Iterator[pd.DataFrame]:
        raise NotImplementedError


class _CsvSource(_Source):
    is_csv = True

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = path.name
        fields = _FieldCounter()
        _, self.encoding = _scan_utf8(path, fields)
        with open(path, encoding=self.encoding, newline="") as handle:
            header = next(csv.reader(io.StringIO(handle.readline())), [])
        self.columns = [name.strip() for name in header]
        if fields.quoted:  # quoted values may hold commas and newlines: the csv module reads the records
            self.total_rows = _check_records(path, self.encoding, self.columns)
        else:
            self.total_rows = fields.check(path.name, self.columns)
        if self.total_rows == 0:
            raise ContractError(
                [Problem(self.name, "has a header but no data rows; leave the file out to load nothing")]
            )

    def chunks(self, rows: int, columns: list[str]) -> Iterator[pd.DataFrame]:
        try:
            reader = pd.read_csv(
                self.path,
                dtype=str,
                keep_default_na=False,
                na_filter=False,
                encoding=self.encoding,
                chunksize=rows,
            )
            for chunk in reader:
                chunk.columns = [str(c).strip() for c in chunk.columns]
                yield chunk
        except pd.errors.ParserError as exc:
            detail = str(exc).strip().removeprefix("Error tokenizing data. C error: ")
            raise ContractError([Problem(self.name, f"is not valid CSV: {detail}")]) from exc


class _FieldCounter:
    """Fields per line of a file with no quote character (one more than its commas), counted block by
    block with numpy while the file is checked for UTF-8: the common case costs no second read (the csv
    module's record pass, for files with quotes, adds about 13 % to a 1M-line import)."""

    def __init__(self) -> None:
        self.quoted = False
        self.line = 0  # lines finished so far
        self.commas = 0  # commas of the line being read (carried across blocks)
        self.length = 0  # its bytes so far
        self.last = 0  # its last byte
        self.header: int | None = None
        self.records = 0
        self.wrong: list[
            tuple[int, int, int]
        ] = []  # (record, line, fields) of lines not as wide as the header
        self.more = 0

    def feed(self, block: bytes) -> None:
        if self.quoted:
            return
        data = np.frombuffer(block, dtype=np.uint8)
        if (data == 34).any():
            self.quoted = True
            return
        ends = np.flatnonzero(data == 10)
        counted = np.concatenate([[0], np.cumsum(data == 44, dtype=np.int64)])
        starts = np.concatenate([[0], ends[:-1] + 1])
        commas = counted[ends] - counted[starts]
        lengths = ends - starts
        if len(ends):
            commas[0] += self.commas
            lengths[0] += self.length
            before = np.where(ends > 0, data[np.maximum(ends - 1, 0)], self.last)
            self._lines(commas, lengths, before == 13)
        tail = data[ends[-1] + 1 :] if len(ends) else data
        self.commas = (self.commas if not len(ends) else 0) + int((tail == 44).sum())
        self.length = (self.length if not len(ends) else 0) + len(tail)
        if len(data):
            self.last = int(data[-1])

    def _lines(self, commas: np.ndarray, lengths: np.ndarray, carriage: np.ndarray) -> None:
        blank = (lengths == 0) | ((lengths == 1) & carriage)
        numbers = self.line + 1 + np.arange(len(commas))
        self.line += len(commas)
        keep = ~blank
        commas, numbers = commas[keep], numbers[keep]
        if not len(commas):
            return
        if self.header is None:
            self.header = int(commas[0]) + 1
            commas, numbers = commas[1:], numbers[1:]
        record = self.records + 1 + np.arange(len(commas))
        self.records += len(commas)
        off = np.flatnonzero(commas + 1 != self.header)
        room = max(MAX_PROBLEMS - len(self.wrong), 0)
        self.wrong += [(int(record[i]), int(numbers[i]), int(commas[i]) + 1) for i in off[:room]]
        self.more += max(len(off) - room, 0)

    def finish(self) -> None:
        if not self.quoted and self.length and not (self.length == 1 and self.last == 13):
            self._lines(np.array([self.commas]), np.array([self.length]), np.array([False]))
            self.length = 0

    def check(self, name: str, header: list[str]) -> int:
        """The data records' count; refused if a line is not as wide as the header."""
        problems = [_width_problem(name, header, record, line, fields) for record, line, fields in self.wrong]
        if problems:
            raise ContractError(problems, self.more)
        return self.records


def _width_problem(name: str, header: list[str], record: int, line: int, fields: int) -> Problem:
    width = len(header)
    if fields < width:
        message = (
            f"has {fields} of the header's {width} fields (it ends before column "
            f"'{header[fields].strip()}'); a row must have every field, empty ones included"
        )
    else:
        message = f"has {fields} fields but the header has {width}"
    return Problem(name, message, row=record, line=line)


def _check_records(path: Path, encoding: str, header: list[str]) -> int:
    """Every record of the file has the header's fields, and every quoted value is closed; the count of
    data records. A short record would otherwise load as empty trailing values (and blank what the
    database holds), a long one or an unclosed quote would be reported without its line."""
    name, width = path.name, len(header)
    problems: list[Problem] = []
    more = records = 0
    with open(path, encoding=encoding, newline="") as handle:
        reader = csv.reader(handle, strict=True)
        end = 0  # the physical line the previous record ended on
        try:
            next(reader, None)
            end = reader.line_num
            for fields in reader:
                records += 1
                if len(fields) != width and fields:
                    if len(problems) >= MAX_PROBLEMS:
                        more += 1
                    else:
                        problems.append(_width_problem(name, header, records, end + 1, len(fields)))
                elif not fields:
                    records -= 1  # a blank line holds no record (pandas skips it too)
                end = reader.line_num
        except csv.Error as exc:
            problems.append(_quote_problem(path, encoding, header, records + 1, end + 1, str(exc)))
    if problems:
        raise ContractError(problems, more)
    return records


def _quote_problem(path: Path, encoding: str, header: list[str], row: int, line: int, error: str) -> Problem:
    """Where a record's quoting breaks: the field of its first line whose quote is never closed, or that
    goes on after its closing quote."""
    with open(path, encoding=encoding, newline="") as handle:
        text = next(itertools.islice(handle, line - 1, None), "").rstrip("\r\n")
    field, quoted, opened, after_close = 0, False, None, None
    position = 0
    while position < len(text):
        char = text[position]
        if quoted:
            if char == '"':
                if text[position + 1 : position + 2] == '"':
                    position += 1
                else:
                    quoted = False
                    following = text[position + 1 : position + 2]
                    if following not in ("", ",") and after_close is None:
                        after_close = field
        elif char == ",":
            field += 1
        elif char == '"' and (position == 0 or text[position - 1] == ","):
            quoted, opened = True, field
        position += 1
    culprit = opened if quoted else after_close
    column = header[culprit].strip() if culprit is not None and culprit < len(header) else None
    if quoted:
        message = 'a quoted value is never closed (its closing " is missing; the rest of the file would be read into it)'
    elif after_close is not None:
        message = 'a quoted value goes on after its closing " (write a quote inside a quoted value as "")'
    else:
        message = f"is not valid CSV: {error}"
    return Problem(path.name, message, row=row, column=column, line=line)


def _scan_utf8(path: Path, fields: _FieldCounter | None = None) -> tuple[int, str]:
    """Check the whole file is UTF-8 and count its data rows (lines after the header); `fields` counts
    each line's fields on the way."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    newlines, size, offset, last = 0, 0, 0, b""
    with open(path, "rb") as handle:
        first = handle.read(3)
        encoding = "utf-8-sig" if first == codecs.BOM_UTF8 else "utf-8"
        handle.seek(0)
        while block := handle.read(1 << 20):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                bad = offset + exc.start
                line = newlines + block[: exc.start].count(b"\n") + 1
                raise ContractError(
                    [
                        Problem(
                            path.name,
                            f"is not UTF-8: byte 0x{block[exc.start]:02x} at offset {bad} "
                            f"(line {line}); re-export the file as UTF-8",
                            row=line - 1 if line > 1 else None,
                            line=line if line > 1 else None,
                        )
                    ]
                ) from exc
            if fields is not None:
                fields.feed(block[3:] if offset == 0 and encoding == "utf-8-sig" else block)
            newlines += block.count(b"\n")
            size += len(block)
            offset += len(block)
            last = block[-1:]
    if fields is not None:
        fields.finish()
    if size == 0 or (size <= 3 and encoding == "utf-8-sig"):
        raise ContractError([Problem(path.name, "is empty (it needs at least a header row)")])
    lines = newlines + (0 if last == b"\n" else 1)
    return max(lines - 1, 0), encoding


class _ParquetSource(_Source):
    is_csv = False

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = path.name
        try:
            self.file = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as exc:
            raise ContractError([Problem(self.name, f"is not a readable Parquet file: {exc}")]) from exc
        self.columns = list(self.file.schema_arrow.names)
        self.total_rows = self.file.metadata.num_rows
        if self.total_rows == 0:
            raise ContractError([Problem(self.name, "has no rows; leave the file out to load nothing")])

    def chunks(self, rows: int, columns: list[str]) -> Iterator[pd.DataFrame]:
        for batch in self.file.iter_batches(batch_size=rows, columns=columns):
            yield batch.to_pandas()


def _open(path: Path) -> _Source:
    return _CsvSource(path) if path.suffix.lower() == ".csv" else _ParquetSource(path)


# --- validating values ---------------------------------------------------------------------------


class _Problems:
    """Collects problems of one file; stops collecting after MAX_PROBLEMS."""

    def __init__(self, source: _Source) -> None:
        self.source = source
        self.items: list[Problem] = []
        self.more = 0

    def add(self, message: str, row: int | None = None, column: str | None = None) -> None:
        if len(self.items) >= MAX_PROBLEMS:
            self.more += 1
            return
        line = row + 1 if (row is not None and self.source.is_csv) else None
        self.items.append(Problem(self.source.name, message, row=row, column=column, line=line))

    def add_rows(self, mask: pd.Series, rows: np.ndarray, column: str, message: Callable[[int], str]) -> None:
        """One problem per flagged row; `message(i)` builds the text for position i of the chunk."""
        flagged = np.flatnonzero(pd.Series(mask).fillna(False).to_numpy(dtype=bool))
        room = max(MAX_PROBLEMS - len(self.items), 0)
        for position in flagged[:room]:
            self.add(message(int(position)), row=int(rows[position]), column=column)
        self.more += max(len(flagged) - room, 0)

    def raise_if_any(self) -> None:
        if self.items:
            raise ContractError(self.items, self.more)


def _as_text(values: pd.Series) -> pd.Series:
    """Raw values of a column as stripped text, '' for missing."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        stamps = values if values.dt.tz is not None else values.dt.tz_localize("UTC")
        return stamps.dt.strftime("%Y-%m-%dT%H:%M:%S.%f%z").fillna("")
    if pd.api.types.is_bool_dtype(values.dtype):
        return values.map({True: "true", False: "false"}).fillna("").astype(str)
    if pd.api.types.is_float_dtype(values.dtype):
        # Parquet money as floats: keep enough digits to tell 12.5 from 12.499999 (3+ decimals fail).
        return values.map(lambda v: "" if pd.isna(v) else format(v, ".6f").rstrip("0").rstrip(".")).astype(
            str
        )
    text = values.astype(str) if values.dtype != object else values.map(lambda v: "" if v is None else str(v))
    text = text.where(values.notna(), "")
    return text.str.strip()


def _parse(text: pd.Series, ok: pd.Series, kind: pa.DataType) -> np.ndarray:
    """Numbers from text already checked well-formed where `ok` (0 elsewhere), parsed by Arrow."""
    cleaned = text.where(ok, "0").str.lstrip("+")
    return pc.cast(pa.array(cleaned, type=pa.string()), kind).to_numpy(zero_copy_only=False)


def _quote(value: str) -> str:
    return repr(value) if len(value) <= 40 else repr(value[:40] + "...")


def _validate_column(column: Column, raw: pd.Series, rows: np.ndarray, problems: _Problems) -> pd.Series:
    """Check one column of a chunk and return its canonical values (NA where missing)."""
    text = _as_text(raw)
    missing = text == ""
    name = column.name
    if column.required:
        problems.add_rows(missing, rows, name, lambda i: "is required but empty")
    present = ~missing

    if column.kind in ("id", "text", "enum"):
        nul = present & text.str.contains("\x00", regex=False)
        problems.add_rows(
            nul, rows, name, lambda i: "contains a NUL character (byte 0x00), which cannot be stored"
        )
        present = present & ~nul

    if column.kind in ("id", "text"):
        if problems.source.is_csv:  # the exporter's escape of formula-like cells (oms.exporter)
            text = text.str.replace(contract.ESCAPED_FORMULA, "", regex=True)
        too_long = present & (text.str.len() > column.max_length)
        problems.add_rows(too_long, rows, name, lambda i: f"is longer than {column.max_length} characters")
        return text.where(present, None)

    if column.kind == "enum":
        lowered = text.str.lower()
        bad = present & ~lowered.isin(column.values)
        problems.add_rows(
            bad, rows, name, lambda i: f"{_quote(text.iat[i])} is not one of: {', '.join(column.values)}"
        )
        return lowered.where(present, None)

    if column.kind == "timestamp":
        stamps = pd.to_datetime(text.where(present, None), utc=True, format="ISO8601", errors="coerce")
        bad = present & stamps.isna()
        problems.add_rows(bad, rows, name, lambda i: f"{_quote(text.iat[i])} is not an ISO 8601 timestamp")
        return stamps.dt.as_unit("us")

    if column.kind in ("money", "signed_money"):
        well_formed = text.str.fullmatch(MONEY_PATTERN)
        bad = present & ~well_formed
        problems.add_rows(
            bad, rows, name, lambda i: f"{_quote(text.iat[i])} is not an amount with at most 2 decimal places"
        )
        ok = present & well_formed
        cents = pd.Series(np.round(_parse(text, ok, pa.float64()) * 100).astype(np.int64), index=text.index)
        if column.kind == "money":
            problems.add_rows(ok & (cents < 0), rows, name, lambda i: f"{text.iat[i]} must not be negative")
        problems.add_rows(
            ok & (cents.abs() > MAX_MONEY_CENTS), rows, name, lambda i: f"{text.iat[i]} is too large"
        )
        return cents.astype("Int64").where(ok, pd.NA)

    if column.kind in ("count", "int"):
        # '4.0' and '4.00' are whole numbers (pandas writes a nullable integer column so); '4.5' is not
        whole = text.str.fullmatch(r"[+-]?\d{1,10}(?:\.0*)?")
        bad = present & ~whole
        problems.add_rows(bad, rows, name, lambda i: f"{_quote(text.iat[i])} is not a whole number")
        ok = present & whole
        integral = text.str.replace(r"\.0*$", "", regex=True)
        numbers = pd.Series(
            pd.array(_parse(integral, ok, pa.int64()), dtype="Int64"), index=text.index
        ).where(ok, pd.NA)
        if column.kind == "count":
            floor, word = (1, "greater than 0") if column.positive else (0, "0 or more")
            problems.add_rows(
                ok & (numbers < floor).fillna(False), rows, name, lambda i: f"{text.iat[i]} must be {word}"
            )
        problems.add_rows(
            ok & (numbers.abs() > MAX_COUNT).fillna(False),
            rows,
            name,
            lambda i: f"{text.iat[i]} is too large",
        )
        return numbers

    if column.kind == "bool":
        lowered = text.str.lower()
        truthy, falsy = lowered.isin(TRUE_WORDS), lowered.isin(FALSE_WORDS)
        bad = present & ~(truthy | falsy)
        problems.add_rows(bad, rows, name, lambda i: f"{_quote(text.iat[i])} is not true or false")
        return pd.Series(pd.array(np.where(truthy, True, False), dtype="boolean"), index=text.index).where(
            present, pd.NA
        )

    raise AssertionError(f"unknown column kind {column.kind}")


def _default(column: Column, length: int, index: pd.Index) -> pd.Series:
    """The canonical value of a column's default, for a column the file leaves out or a blank cell."""
    one = _validate_column(
        column, pd.Series([column.default], dtype=object), np.arange(1), _Problems(_NullSource())
    )
    return pd.Series(np.repeat(one.to_numpy(), length), index=index, dtype=one.dtype)


class _NullSource(_Source):
    name = "<default>"
    is_csv = False


# --- what this load holds, for references ---------------------------------------------------------


def _key_strings(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.Series:
    """One text key per row ('a' or 'a<US>1' for composite keys); object dtype for fast hashing."""
    parts = [frame[c].astype("string") for c in columns]
    key = parts[0]
    for part in parts[1:]:
        key = key + KEY_SEPARATOR + part
    return key.astype(object).where(key.notna(), None)


class _Known:
    """Keys (and a few attributes) of one table: rows of this load, and rows found in the database.

    Rows of this load take part in duplicate checks; rows found in the database only answer references.
    """

    def __init__(self, attributes: tuple[str, ...]) -> None:
        self.attributes = list(attributes)
        self.load_keys: list[pd.Series] = []
        self.load_rows: list[np.ndarray] = []
        self.load_attrs: list[pd.DataFrame] = []
        self.seen: set[str] = set()
        self.database = pd.DataFrame(columns=self.attributes, index=pd.Index([], dtype=object))
        self._resolved: pd.DataFrame | None = None

    def add_loaded(self, keys: pd.Series, frame: pd.DataFrame, rows: np.ndarray) -> None:
        self.load_keys.append(keys.reset_index(drop=True))
        self.load_attrs.append(frame[self.attributes].reset_index(drop=True))
        self.load_rows.append(rows)
        self._resolved = None

    def add_found(self, keys: pd.Series, frame: pd.DataFrame) -> None:
        found = frame[self.attributes].set_axis(pd.Index(keys), axis=0)
        self.database = pd.concat([self.database, found]) if len(self.database.index) else found
        self._resolved = None

    def resolved(self) -> pd.DataFrame:
        """Every known row by key; a row of this load wins over the database's version."""
        if self._resolved is None:
            frame = self.database
            if self.load_keys:
                loaded = pd.concat(self.load_attrs, ignore_index=True)
                loaded.index = pd.Index(pd.concat(self.load_keys, ignore_index=True))
                # len(), not .empty: frames without attribute columns are "empty" but still hold keys
                frame = pd.concat([frame, loaded]) if len(frame.index) else loaded
            self._resolved = frame[~frame.index.duplicated(keep="last")]
        return self._resolved


# Attributes of referenced rows that later files are checked against.
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "orders": ("placed_at",),
    "order_lines": ("sku",),
    "returns": ("order_id",),
}


# --- writing -------------------------------------------------------------------------------------


class _Writer:
    """Writes canonical chunks of one table inside the load's transaction.

    Into an empty table a file is written in bulk mode (the PostgreSQL manual's "Populating a
    Database" recipe, also right for SQLite): secondary indexes (and on PostgreSQL the table's own
    foreign keys) are dropped, rows are appended without conflict handling (keys were checked unique),
    and indexes and foreign keys are rebuilt once at the end, all inside the transaction. Otherwise
    each chunk is upserted by key.
    """

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.bulk = False

    def begin_file(self, spec: FileSpec, table_is_empty: bool) -> None:
        self.bulk = table_is_empty
        if self.bulk:
            if self.drops_foreign_keys:
                # Index builds sort in memory instead of spilling to disk (this transaction only).
                self.connection.exec_driver_sql("SET LOCAL maintenance_work_mem = '512MB'")
            table = metadata.tables[spec.table]
            for index in table.indexes:
                index.drop(self.connection)
            if self.drops_foreign_keys:
                for constraint in table.foreign_key_constraints:
                    self.connection.execute(DropConstraint(constraint))

    def end_file(self, spec: FileSpec) -> None:
        if self.bulk:
            table = metadata.tables[spec.table]
            for index in table.indexes:
                index.create(self.connection)
            if self.drops_foreign_keys:
                for constraint in table.foreign_key_constraints:
                    self.connection.execute(AddConstraint(constraint))
        self.bulk = False

    drops_foreign_keys = False

    def write(self, spec: FileSpec, frame: pd.DataFrame) -> None:
        raise NotImplementedError

    def _upsert_sql(self, spec: FileSpec, columns: list[str], source: str, distinct: str) -> str:
        key = ", ".join(spec.key)
        names = ", ".join(columns)
        if self.bulk:
            return f"INSERT INTO {spec.table} ({names}) {source}"
        updates = [c for c in columns if c not in spec.key]
        if not updates:
            return f"INSERT INTO {spec.table} ({names}) {source} ON CONFLICT ({key}) DO NOTHING"
        assignments = ", ".join(f"{c} = excluded.{c}" for c in updates)
        changed = " OR ".join(distinct.format(t=f"{spec.table}.{c}", e=f"excluded.{c}") for c in updates)
        return (
            f"INSERT INTO {spec.table} ({names}) {source} "
            f"ON CONFLICT ({key}) DO UPDATE SET {assignments} WHERE {changed}"
        )


def _sqlite_timestamps(values: pd.Series) -> np.ndarray:
    """UTC timestamps as the text SQLAlchemy's SQLite dialect stores ('2024-01-31 10:00:00.000000')."""
    stamps = values.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[us]")
    out = np.char.replace(np.datetime_as_string(stamps, unit="us"), "T", " ").astype(object)
    out[np.isnat(stamps)] = None
    return out


class _SQLiteWriter(_Writer):
    def write(self, spec: FileSpec, frame: pd.DataFrame) -> None:
        columns = list(frame.columns)
        cells: list[np.ndarray] = []
        for name in columns:
            values = frame[name]
            if isinstance(values.dtype, pd.DatetimeTZDtype):
                cells.append(_sqlite_timestamps(values))
            elif _is_money(spec, name):
                # SQLite keeps NUMERIC as REAL; cents / 100 is the same double as parsing the decimal text.
                cells.append(
                    (values.astype("float64") / 100).astype(object).where(values.notna(), None).to_numpy()
                )
            else:
                cells.append(values.astype(object).where(values.notna(), None).to_numpy())
        placeholders = ", ".join("?" for _ in columns)
        sql = self._upsert_sql(spec, columns, f"VALUES ({placeholders})", "{t} IS NOT {e}")
        self.connection.exec_driver_sql(sql, list(zip(*cells, strict=True)))


class _PostgresWriter(_Writer):
    drops_foreign_keys = True

    def __init__(self, connection: Connection) -> None:
        super().__init__(connection)
        self.staged: set[str] = set()

    def write(self, spec: FileSpec, frame: pd.DataFrame) -> None:
        columns = list(frame.columns)
        names = ", ".join(columns)
        arrays = []
        for name in columns:
            values = frame[name]
            if _is_money(spec, name):
                # cents / 100 prints (shortest repr) as the exact 2-place decimal; NUMERIC stores it exactly
                values = values.astype("float64") / 100
            elif values.dtype == object:
                values = values.astype("string")
            arrays.append(pa.array(values, from_pandas=True))
        buffer = io.BytesIO()
        pa_csv.write_csv(
            pa.Table.from_arrays(arrays, names=columns), buffer, pa_csv.WriteOptions(include_header=False)
        )
        payload = buffer.getvalue()
        raw = self.connection.connection.driver_connection
        with raw.cursor() as cursor:
            if self.bulk:
                with cursor.copy(f"COPY {spec.table} ({names}) FROM STDIN WITH (FORMAT csv)") as copy:
                    copy.write(payload)
                return
            stage = f"_recoup_stage_{spec.table}"
            if stage not in self.staged:
                cursor.execute(
                    f"DROP TABLE IF EXISTS pg_temp.{stage}"
                )  # left by an earlier load in this transaction
                cursor.execute(
                    f"CREATE TEMP TABLE {stage} ON COMMIT DROP AS SELECT {names} FROM {spec.table} WITH NO DATA"
                )
                self.staged.add(stage)
            else:
                cursor.execute(f"TRUNCATE {stage}")
            with cursor.copy(f"COPY {stage} ({names}) FROM STDIN WITH (FORMAT csv)") as copy:
                copy.write(payload)
            cursor.execute(
                self._upsert_sql(spec, columns, f"SELECT {names} FROM {stage}", "{t} IS DISTINCT FROM {e}")
            )


def _is_money(spec: FileSpec, name: str) -> bool:
    return name in spec.names and spec.column(name).kind in ("money", "signed_money")


# --- the load ------------------------------------------------------------------------------------


class _Load:
    def __init__(self, connection: Connection, chunk_rows: int, progress: Progress | None) -> None:
        self.connection = connection
        self.chunk_rows = chunk_rows
        self.progress = progress
        self.known: dict[str, _Known] = {}
        # the order lines this load's return lines return (key strings) and their rows in the file
        self.returned_lines: list[tuple[np.ndarray, np.ndarray]] = []
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recoup-import-writer")
        self.tasks: list[tuple[Future, _Source, np.ndarray | None]] = []
        backend = connection.dialect.name
        self.writer: _Writer = (
            _PostgresWriter(connection) if backend == "postgresql" else _SQLiteWriter(connection)
        )

    def run(self, files: dict[str, Path]) -> ImportReport:
        specs = [spec for spec in contract.FILES if spec.table in files]
        before = {spec.table: self._count(spec.table) for spec in specs}
        report = ImportReport()
        try:
            for spec in specs:
                report.files.append(
                    self._load_file(spec, files[spec.table], table_is_empty=before[spec.table] == 0)
                )
            self._settle()
            if "return_lines" in files:
                self._check_returned_units(files["return_lines"])
        finally:
            wait([future for future, _, _ in self.tasks])  # failing: let the writer stop before the rollback
            self.pool.shutdown(wait=True)
        for item in report.files:
            item.new_rows = self._count(item.table) - before[item.table]
        # fresh planner statistics: without them PostgreSQL picks scans over the new indexes
        for item in report.files:
            if item.new_rows >= ANALYZE_AFTER_ROWS:
                self.connection.exec_driver_sql(f"ANALYZE {item.table}")
        return report

    def _count(self, table: str) -> int:
        self._settle()
        return self.connection.execute(select(func.count()).select_from(metadata.tables[table])).scalar_one()

    def _load_file(self, spec: FileSpec, path: Path, table_is_empty: bool) -> FileReport:
        started = time.perf_counter()
        source = _open(path)
        self._check_header(spec, source)
        report = FileReport(spec.table, path)
        self._submit(source, None, self.writer.begin_file, spec, table_is_empty)
        known = self._known(spec.table)
        columns = [c for c in source.columns if c in spec.names]
        offset = 0
        for raw in source.chunks(self.chunk_rows, columns):
            rows = np.arange(offset + 1, offset + len(raw) + 1)
            problems = _Problems(source)
            frame = self._validate_chunk(spec, raw, rows, problems)
            problems.raise_if_any()
            keys = _key_strings(frame, spec.key)
            self._check_duplicates(spec, source, keys, rows, known)
            self._check_references(spec, source, frame, rows)
            problems.raise_if_any()
            known.add_loaded(keys, frame, rows)
            self._backpressure()
            self._submit(source, rows, self.writer.write, spec, frame)
            offset += len(raw)
            if self.progress:
                self.progress(spec.table, offset, max(source.total_rows, offset))
        self._submit(source, None, self.writer.end_file, spec)
        report.rows = offset
        report.seconds = time.perf_counter() - started
        return report

    def _check_header(self, spec: FileSpec, source: _Source) -> None:
        problems = _Problems(source)
        seen: set[str] = set()
        for name in source.columns:
            if name in seen:
                problems.add(f"the header names column '{name}' twice")
            seen.add(name)
            if name not in spec.names:
                problems.add(f"unknown column '{name}' (the {spec.table} file has: {', '.join(spec.names)})")
        for name in spec.required:
            if name not in seen:
                problems.add(f"required column '{name}' is missing from the header")
        problems.raise_if_any()

    def _validate_chunk(
        self, spec: FileSpec, raw: pd.DataFrame, rows: np.ndarray, problems: _Problems
    ) -> pd.DataFrame:
        raw = raw.reset_index(drop=True)
        frame = pd.DataFrame(index=raw.index)
        for column in spec.columns:
            if column.name in raw.columns:
                values = _validate_column(column, raw[column.name], rows, problems)
                if column.default is not None:
                    values = values.where(values.notna(), _default(column, len(raw), raw.index))
                frame[column.name] = values
            elif column.default is not None:
                frame[column.name] = _default(column, len(raw), raw.index)
        if problems.items:
            return frame
        self._check_rows(spec, frame, rows, problems)
        return frame

    def _check_rows(self, spec: FileSpec, frame: pd.DataFrame, rows: np.ndarray, problems: _Problems) -> None:
        """Rules across the columns of one row."""
        if spec.table == "order_lines":
            over = frame["discount"] > frame["unit_price"] * frame["quantity"]
            problems.add_rows(
                over.fillna(False), rows, "discount", lambda i: "is more than the line's price times quantity"
            )
        if spec.table == "returns":
            received = (
                frame["received_at"]
                if "received_at" in frame
                else pd.Series(pd.NaT, index=frame.index, dtype="datetime64[us, UTC]")
            )
            early = (received < frame["requested_at"]).fillna(False)
            problems.add_rows(early, rows, "received_at", lambda i: "is before requested_at")
            if "refunded_at" in frame:
                early = (frame["refunded_at"] < frame["requested_at"]).fillna(False)
                problems.add_rows(early, rows, "refunded_at", lambda i: "is before requested_at")
            # History without a status: received returns are 'received', the others 'authorized'.
            derived = pd.Series(np.where(received.notna(), "received", "authorized"), index=frame.index)
            status = (
                frame["status"] if "status" in frame else pd.Series(None, index=frame.index, dtype=object)
            )
            frame["status"] = status.where(status.notna(), derived)

    def _check_duplicates(
        self, spec: FileSpec, source: _Source, keys: pd.Series, rows: np.ndarray, known: _Known
    ) -> None:
        chunk_keys = keys.tolist()
        if not keys.duplicated().any() and known.seen.isdisjoint(chunk_keys):
            known.seen.update(chunk_keys)
            return
        previous = pd.concat([*known.load_keys, keys.reset_index(drop=True)], ignore_index=True)
        all_rows = np.concatenate([*known.load_rows, rows])
        duplicated = previous.duplicated(keep=False).to_numpy()
        if not duplicated.any():
            return
        problems = _Problems(source)
        dup_keys = previous[duplicated]
        for key in dup_keys.unique()[:MAX_PROBLEMS]:
            where = all_rows[(previous == key).to_numpy()]
            label = ", ".join(f"{c}={v!r}" for c, v in zip(spec.key, key.split(KEY_SEPARATOR), strict=True))
            problems.add(
                f"duplicate key ({label}) also at row {int(where[0])}",
                row=int(where[1]),
                column=spec.key[0] if len(spec.key) == 1 else None,
            )
        problems.raise_if_any()

    def _known(self, table: str) -> _Known:
        return self.known.setdefault(table, _Known(ATTRIBUTES.get(table, ())))

    def _lookup(self, table: str, keys: pd.Series) -> pd.DataFrame:
        """Rows of `table` with these keys, from this load or else the database (missing keys absent)."""
        known = self._known(table)
        wanted = pd.Index(keys.dropna().unique())
        missing = wanted.difference(known.resolved().index)
        if len(missing):
            spec = contract.BY_TABLE[table]
            found = self._fetch(spec, list(missing))
            if len(found):
                known.add_found(_key_strings(found, spec.key), found)
        frame = known.resolved()
        return frame[frame.index.isin(wanted)]

    def _fetch(self, spec: FileSpec, keys: list[str]) -> pd.DataFrame:
        table = metadata.tables[spec.table]
        wanted = [*spec.key, *ATTRIBUTES.get(spec.table, ())]
        columns = [table.c[c] for c in wanted]
        self._settle()
        found: list[tuple] = []
        batch = 500
        for start in range(0, len(keys), batch):
            part = [k.split(KEY_SEPARATOR) for k in keys[start : start + batch]]
            if len(spec.key) == 1:
                condition = table.c[spec.key[0]].in_([p[0] for p in part])
            else:
                typed = [tuple(_typed_key(spec, i, v) for i, v in enumerate(p)) for p in part]
                condition = tuple_(*[table.c[c] for c in spec.key]).in_(typed)
            found.extend(self.connection.execute(select(*columns).where(condition)).all())
        frame = pd.DataFrame(found, columns=wanted)
        for name in wanted:
            if name in spec.names and spec.column(name).kind == "timestamp":
                frame[name] = pd.to_datetime(frame[name], utc=True).dt.as_unit("us")
            elif name in spec.names and spec.column(name).kind == "count":
                frame[name] = frame[name].astype("Int64")
        return frame

    def _check_references(
        self, spec: FileSpec, source: _Source, frame: pd.DataFrame, rows: np.ndarray
    ) -> None:
        problems = _Problems(source)
        for ref in spec.references:
            if not all(c in frame for c in ref.columns):
                continue
            values = _key_strings(frame, ref.columns)
            present = values.notna()
            if not present.any():
                continue
            found = self._lookup(ref.table, values[present])
            dangling = present & ~values.isin(found.index)
            what = ref.table.rstrip("s").replace("_", " ")
            problems.add_rows(
                dangling,
                rows,
                ref.columns[0],
                lambda i, what=what, table=ref.table, v=values: (
                    f"{_quote(str(v.iat[i]))} does not match any {what} "
                    f"(not in {table} of this load, nor in the database)"
                ),
            )
            if spec.table == "returns" and ref.table == "orders":
                placed = values.map(found["placed_at"]) if len(found) else values.map(lambda _: pd.NaT)
                early = (frame["requested_at"] < pd.to_datetime(placed, utc=True)).fillna(False)
                problems.add_rows(early, rows, "requested_at", lambda i: "is before the order was placed")
        if spec.table == "return_lines":
            self._check_returned_lines(frame, rows, problems)
        problems.raise_if_any()

    def _check_returned_lines(self, frame: pd.DataFrame, rows: np.ndarray, problems: _Problems) -> None:
        """Fill return_lines.order_id from the return, and check the returned order line exists."""
        headers = self._lookup("returns", frame["return_id"])
        order_id = frame["return_id"].map(headers["order_id"])
        frame["order_id"] = order_id.astype(object).where(order_id.notna(), None)
        if "order_line_no" not in frame:
            return
        has_line = frame["order_line_no"].notna()
        receiptless = has_line & frame["order_id"].isna()
        problems.add_rows(
            receiptless, rows, "order_line_no", lambda i: "is given but the return has no order (receiptless)"
        )
        linked = has_line & frame["order_id"].notna()
        if not linked.any():
            return
        keys = _key_strings(frame[["order_id", "order_line_no"]], ("order_id", "order_line_no"))
        self.returned_lines.append((keys[linked].to_numpy(), rows[linked.to_numpy()]))
        lines = self._lookup("order_lines", keys[linked])
        dangling = linked & ~keys.isin(lines.index)
        problems.add_rows(
            dangling,
            rows,
            "order_line_no",
            lambda i: f"order {frame['order_id'].iat[i]!r} has no line {frame['order_line_no'].iat[i]}",
        )
        ordered_sku = keys.map(lines["sku"]) if len(lines) else keys.map(lambda _: None)
        other_sku = linked & ~dangling & (ordered_sku != frame["sku"]).fillna(False)
        problems.add_rows(
            other_sku,
            rows,
            "sku",
            lambda i: f"{frame['sku'].iat[i]!r} differs from the ordered line's sku {ordered_sku.iat[i]!r}",
        )

    def _check_returned_units(self, path: Path) -> None:
        """No order line returns more units than it sold, over this load's return lines and those the
        database holds (received units, or those asked for by a return still open), checked once all is
        written, inside the load's transaction."""
        if not self.returned_lines:
            return
        keys = np.concatenate([k for k, _ in self.returned_lines])
        rows = np.concatenate([r for _, r in self.returned_lines])
        last_row = dict(zip(keys.tolist(), rows.tolist(), strict=True))  # each key's last row in the file
        problems = _Problems(_NamedSource(path))
        for order_id, line_no, bought, returned in invariants.over_returned_lines(self.connection):
            row = last_row.get(f"{order_id}{KEY_SEPARATOR}{line_no}")
            if row is not None:
                problems.add(
                    f"order {order_id!r} line {line_no} sold {bought} unit(s), but its returns (in this load "
                    f"and the database) take back {returned}",
                    row=int(row),
                    column="quantity",
                )
        problems.raise_if_any()

    # The writer thread takes the database work (DDL, chunk writes) in order, so the main thread can
    # validate the next chunk, or the next file, meanwhile. The connection is never used by both threads
    # at once: before the main thread touches it (lookups, counts) it waits for every task to finish.

    def _submit(
        self, source: _Source, rows: np.ndarray | None, task: Callable[..., None], *args: object
    ) -> None:
        self.tasks.append((self.pool.submit(task, *args), source, rows))

    def _backpressure(self) -> None:
        """At most one chunk waits in the writer's queue (memory stays bounded)."""
        writes = [future for future, _, rows in self.tasks if rows is not None]
        if len(writes) > 1:
            wait(writes[:-1])
        self._raise_failures(done_only=True)

    def _settle(self) -> None:
        wait([future for future, _, _ in self.tasks])
        self._raise_failures(done_only=False)

    def _raise_failures(self, done_only: bool) -> None:
        remaining = []
        for future, source, rows in self.tasks:
            if done_only and not future.done():
                remaining.append((future, source, rows))
                continue
            try:
                future.result()
            except DBAPIError as exc:
                detail = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
                where = f"rows {int(rows[0])}-{int(rows[-1])} were" if rows is not None else "was"
                raise ContractError(
                    [Problem(source.name, f"{where} refused by the database: {detail}")]
                ) from exc
        self.tasks = remaining


class _NamedSource(_Source):
    """A file known by its name only: for problems found after it was read."""

    def __init__(self, path: Path) -> None:
        self.name = path.name
        self.is_csv = path.suffix.lower() == ".csv"


def _typed_key(spec: FileSpec, position: int, value: str) -> object:
    column = spec.column(spec.key[position])
    return int(value) if column.kind in ("count", "int") else value


def import_directory(
    directory: Path,
    bind: Engine | Connection,
    *,
    chunk_rows: int = 100_000,
    progress: Progress | None = None,
) -> ImportReport:
    """Validate and load every contract file in `directory` in one transaction (all or nothing)."""
    files = discover(Path(directory))
    if isinstance(bind, Engine):
        with bind.begin() as connection:
            return _Load(connection, chunk_rows, progress).run(files)
    transaction = bind.begin_nested() if bind.in_transaction() else bind.begin()
    with transaction:
        return _Load(bind, chunk_rows, progress).run(files)
