"""Malformed input: each kind gets one clear error naming file, row and column, and changes nothing."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, text

from oms.errors import ContractError
from oms.importer import import_directory
from tests.factories import fingerprint, sample_rows, write_tables

Tables = dict[str, list[dict[str, str]]]
LAST = -1  # the appended last row of the file


def _set(table: str, index: int, column: str, value: str) -> Callable[[Tables], None]:
    def change(tables: Tables) -> None:
        tables[table][index][column] = value

    return change


def _drop_column(table: str, column: str) -> Callable[[Tables], None]:
    def change(tables: Tables) -> None:
        for row in tables[table]:
            del row[column]

    return change


def _add_column(table: str, column: str) -> Callable[[Tables], None]:
    def change(tables: Tables) -> None:
        for row in tables[table]:
            row[column] = "x"

    return change


def _duplicate(table: str, index: int) -> Callable[[Tables], None]:
    def change(tables: Tables) -> None:
        tables[table].append(dict(tables[table][index]))

    return change


# (id, change to the rows, expected file, row, column, words in the message)
CASES = [
    (
        "missing-required-column",
        _drop_column("orders", "placed_at"),
        "orders.csv",
        None,
        None,
        "required column 'placed_at' is missing",
    ),
    (
        "unknown-column",
        _add_column("customers", "favourite_colour"),
        "customers.csv",
        None,
        None,
        "unknown column 'favourite_colour'",
    ),
    (
        "bad-enum",
        _set("orders", 4, "channel", "carrier_pigeon"),
        "orders.csv",
        5,
        "channel",
        "'carrier_pigeon' is not one of",
    ),
    (
        "negative-quantity",
        _set("order_lines", 2, "quantity", "-2"),
        "order_lines.csv",
        3,
        "quantity",
        "must be greater than 0",
    ),
    (
        "zero-quantity",
        _set("return_lines", 0, "quantity", "0"),
        "return_lines.csv",
        1,
        "quantity",
        "must be greater than 0",
    ),
    (
        "fractional-quantity",
        _set("order_lines", 5, "quantity", "1.5"),
        "order_lines.csv",
        6,
        "quantity",
        "'1.5' is not a whole number",
    ),
    (
        "unparsable-timestamp",
        _set("returns", 3, "requested_at", "31/02/2024 25:00"),
        "returns.csv",
        4,
        "requested_at",
        "is not an ISO 8601 timestamp",
    ),
    (
        "impossible-date",
        _set("customers", 1, "created_at", "2024-02-30T10:00:00Z"),
        "customers.csv",
        2,
        "created_at",
        "is not an ISO 8601 timestamp",
    ),
    (
        "money-three-decimals",
        _set("payments", 0, "amount", "10.005"),
        "payments.csv",
        1,
        "amount",
        "'10.005' is not an amount with at most 2 decimal places",
    ),
    (
        "money-negative",
        _set("products", 0, "list_price", "-1.00"),
        "products.csv",
        1,
        "list_price",
        "must not be negative",
    ),
    (
        "money-text",
        _set("order_lines", 0, "unit_price", "£12"),
        "order_lines.csv",
        1,
        "unit_price",
        "is not an amount",
    ),
    (
        "required-value-empty",
        _set("customers", 6, "created_at", ""),
        "customers.csv",
        7,
        "created_at",
        "is required but empty",
    ),
    (
        "duplicate-key",
        _duplicate("customers", 2),
        "customers.csv",
        LAST,
        "customer_id",
        "duplicate key (customer_id='C0003') also at row 3",
    ),
    (
        "duplicate-composite-key",
        _duplicate("order_lines", 0),
        "order_lines.csv",
        LAST,
        None,
        "duplicate key (order_id='O00001', line_no='1')",
    ),
    (
        "dangling-sku",
        _set("order_lines", 3, "sku", "NO-SUCH-SKU"),
        "order_lines.csv",
        4,
        "sku",
        "'NO-SUCH-SKU' does not match any product",
    ),
    (
        "dangling-order",
        _set("payments", 1, "order_id", "O99999"),
        "payments.csv",
        2,
        "order_id",
        "'O99999' does not match any order",
    ),
    (
        "dangling-order-line",
        _set("return_lines", 2, "order_line_no", "9"),
        "return_lines.csv",
        3,
        "order_line_no",
        "has no line 9",
    ),
    (
        "return-line-other-sku",
        _set("return_lines", 0, "sku", "KETTLE"),
        "return_lines.csv",
        1,
        "sku",
        "differs from the ordered line's sku",
    ),
    (
        "received-before-requested",
        _set("returns", 0, "received_at", "2023-01-01T00:00:00Z"),
        "returns.csv",
        1,
        "received_at",
        "is before requested_at",
    ),
    (
        "return-before-order",
        _set("returns", 0, "requested_at", "2023-01-01T00:00:00Z"),
        "returns.csv",
        1,
        "requested_at",
        "is before the order was placed",
    ),
    (
        "discount-above-price",
        _set("order_lines", 0, "discount", "999.00"),
        "order_lines.csv",
        1,
        "discount",
        "is more than the line's price times quantity",
    ),
    (
        "bad-boolean",
        _set("products", 0, "returnable", "maybe"),
        "products.csv",
        1,
        "returnable",
        "'maybe' is not true or false",
    ),
    (
        "id-too-long",
        _set("customers", 0, "region", "x" * 65),
        "customers.csv",
        1,
        "region",
        "longer than 64 characters",
    ),
    (
        "more-units-returned-than-bought",
        _set("return_lines", 0, "quantity", "5"),
        "return_lines.csv",
        1,
        "quantity",
        "unit(s), but its returns (in this load and the database) take back 5",
    ),
    (
        "half-unit",
        _set("return_lines", 0, "quantity", "4.5"),
        "return_lines.csv",
        1,
        "quantity",
        "'4.5' is not a whole number",
    ),
    (
        "later-file-fails",
        _set("fraud_reviews", 0, "outcome", "guilty"),
        "fraud_reviews.csv",
        1,
        "outcome",
        "'guilty' is not one of",
    ),
]


@pytest.fixture
def loaded(connection: Connection, tmp_path: Path) -> Connection:
    """A database already holding the sample, so 'unchanged' means something."""
    import_directory(write_tables(tmp_path / "base", sample_rows(id_prefix="B-")), connection)
    return connection


def _assert_refused(
    connection: Connection,
    directory: Path,
    file: str,
    row: int | None,
    column: str | None,
    words: str,
    **kwargs,
) -> ContractError:
    before = fingerprint(connection)
    with pytest.raises(ContractError) as caught:
        import_directory(directory, connection, **kwargs)
    message = str(caught.value)
    assert message.startswith(file), message
    if row is not None:
        assert f" row {row}" in message, message
    if column is not None:
        assert f"column '{column}'" in message, message
    assert words in message, message
    assert fingerprint(connection) == before
    return caught.value


@pytest.mark.parametrize(
    ("change", "file", "row", "column", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_malformed_value_is_refused(
    loaded: Connection, tmp_path: Path, change, file, row, column, words
) -> None:
    tables = sample_rows()
    change(tables)
    if row == LAST:
        row = len(tables[file.removesuffix(".csv")])
    _assert_refused(loaded, write_tables(tmp_path / "load", tables), file, row, column, words)


def _write_raw(directory: Path, name: str, content: bytes) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(content)


def test_non_utf8_bytes(loaded: Connection, tmp_path: Path) -> None:
    body = "customer_id,created_at,region\nX1,2024-01-01T00:00:00Z,north\nX2,2024-01-01T00:00:00Z,Café\n"
    _write_raw(tmp_path / "d", "customers.csv", body.encode("latin-1"))
    _assert_refused(loaded, tmp_path / "d", "customers.csv", 2, None, "is not UTF-8: byte 0xe9")


def test_empty_file(loaded: Connection, tmp_path: Path) -> None:
    _write_raw(tmp_path / "d", "locations.csv", b"")
    _assert_refused(loaded, tmp_path / "d", "locations.csv", None, None, "is empty")


def test_header_only(loaded: Connection, tmp_path: Path) -> None:
    _write_raw(tmp_path / "d", "locations.csv", b"location_id,kind,region,name\n")
    _assert_refused(loaded, tmp_path / "d", "locations.csv", None, None, "has a header but no data rows")


def test_unknown_file_name(loaded: Connection, tmp_path: Path) -> None:
    _write_raw(tmp_path / "d", "refunds.csv", b"refund_id\nX\n")
    _assert_refused(loaded, tmp_path / "d", "refunds.csv", None, None, "is not a data-contract file")


def test_same_table_twice(loaded: Connection, tmp_path: Path) -> None:
    _write_raw(tmp_path / "d", "locations.csv", b"location_id,kind\nL9,store\n")
    pq.write_table(pa.table({"location_id": ["L8"], "kind": ["store"]}), tmp_path / "d" / "locations.parquet")
    _assert_refused(loaded, tmp_path / "d", "locations", None, None, "is given twice")


def test_long_csv_row(loaded: Connection, tmp_path: Path) -> None:
    _write_raw(tmp_path / "d", "locations.csv", b"location_id,kind\nL9,store\nL10,store,extra,fields\n")
    error = _assert_refused(
        loaded, tmp_path / "d", "locations.csv", 2, None, "has 4 fields but the header has 2"
    )
    assert str(error).startswith("locations.csv row 2 (line 3): ")


def test_short_csv_row_is_refused_and_blanks_nothing(loaded: Connection, tmp_path: Path) -> None:
    """A row of 2 of 5 fields would load its missing fields as empty: B-C0001's region set to NULL."""
    body = (
        "customer_id,created_at,region,loyalty_tier,loyalty_points\n"
        "B-C0002,2024-01-01T00:00:00Z,north,gold,5\n"
        "B-C0001,2024-01-01T00:00:00Z\n"
    )
    _write_raw(tmp_path / "d", "customers.csv", body.encode())
    error = _assert_refused(
        loaded,
        tmp_path / "d",
        "customers.csv",
        2,
        None,
        "has 2 of the header's 5 fields (it ends before column 'region')",
    )
    assert str(error).startswith("customers.csv row 2 (line 3): ")


def test_nul_byte_is_named_by_row_and_column(loaded: Connection, tmp_path: Path) -> None:
    body = "customer_id,created_at,region\nX1,2024-01-01T00:00:00Z,north\nX2,2024-01-01T00:00:00Z,so\x00uth\n"
    _write_raw(tmp_path / "d", "customers.csv", body.encode())
    _assert_refused(loaded, tmp_path / "d", "customers.csv", 2, "region", "contains a NUL character")


def test_nul_byte_in_parquet(loaded: Connection, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    pq.write_table(
        pa.table({"location_id": ["L1", "L\x002"], "kind": ["store", "store"]}),
        tmp_path / "d" / "locations.parquet",
    )
    _assert_refused(loaded, tmp_path / "d", "locations.parquet", 2, "location_id", "contains a NUL character")


@pytest.mark.parametrize(
    ("record", "column", "words"),
    [
        ('X2,2024-01-01T00:00:00Z,"south', "region", "a quoted value is never closed"),
        ('X2,"2024-01-01T00:00:00Z,south', "created_at", "a quoted value is never closed"),
        ('X2,"2024-01-01T00:00:00Z"Z,south', "created_at", "goes on after its closing"),
    ],
    ids=["last-column", "middle-column", "text-after-closing-quote"],
)
def test_broken_quote_is_blamed_on_its_column(
    loaded: Connection, tmp_path: Path, record: str, column: str, words: str
) -> None:
    body = f"customer_id,created_at,region\nX1,2024-01-01T00:00:00Z,north\n{record}\nX3,2024-01-01T00:00:00Z,east\n"
    _write_raw(tmp_path / "d", "customers.csv", body.encode())
    error = _assert_refused(loaded, tmp_path / "d", "customers.csv", 2, column, words)
    assert "(line 3)" in str(error)


def test_a_quoted_value_may_span_lines(loaded: Connection, tmp_path: Path) -> None:
    body = 'customer_id,created_at,region\nX1,2024-01-01T00:00:00Z,"north\nwest"\nX2,2024-01-01T00:00:00Z,"a ""b"""\n'
    _write_raw(tmp_path / "d", "customers.csv", body.encode())
    report = import_directory(tmp_path / "d", loaded)
    assert report.rows == 2
    regions = dict(
        loaded.execute(text("SELECT customer_id, region FROM customers WHERE customer_id LIKE 'X%'")).all()
    )
    assert regions == {"X1": "north\nwest", "X2": 'a "b"'}


def test_whole_numbers_written_with_zero_decimals_load(loaded: Connection, tmp_path: Path) -> None:
    """pandas writes a nullable integer column as 4.0; 4.0 and 4.00 are whole numbers."""
    tables = sample_rows()
    tables["order_lines"][0]["quantity"] = "2.0"
    tables["order_lines"][1]["line_no"] = tables["order_lines"][1]["line_no"] + ".00"
    tables["customers"][0]["loyalty_points"] = "40.0"
    import_directory(write_tables(tmp_path / "load", tables), loaded)
    first = tables["order_lines"][0]
    quantity = loaded.execute(
        text("SELECT quantity FROM order_lines WHERE order_id = :o AND line_no = :n"),
        {"o": first["order_id"], "n": int(first["line_no"])},
    ).scalar_one()
    assert quantity == 2
    points = loaded.execute(
        text("SELECT loyalty_points FROM customers WHERE customer_id = :c"),
        {"c": tables["customers"][0]["customer_id"]},
    ).scalar_one()
    assert points == 40


def test_returns_over_what_a_line_sold_counting_the_database(loaded: Connection, tmp_path: Path) -> None:
    """The database already holds a return of one unit of an order line; a new load returns the rest and
    one more."""
    base = sample_rows(id_prefix="B-")
    returned = base["return_lines"][0]
    header = next(r for r in base["returns"] if r["return_id"] == returned["return_id"])
    line = next(
        ordered
        for ordered in base["order_lines"]
        if ordered["order_id"] == header["order_id"] and ordered["line_no"] == returned["order_line_no"]
    )
    bought = int(line["quantity"])
    new_return = {**header, "return_id": "B-NEW"}
    new_line = {**returned, "return_id": "B-NEW", "quantity": str(bought)}
    rest = {**new_line, "quantity": str(bought - 1)}
    fits = (
        write_tables(tmp_path / "fits", {"returns": [new_return], "return_lines": [rest]})
        if bought > 1
        else None
    )
    if fits is not None:
        import_directory(fits, loaded)  # the rest of the units: accepted
    over = write_tables(tmp_path / "over", {"returns": [new_return], "return_lines": [new_line]})
    _assert_refused(loaded, over, "return_lines.csv", 1, "quantity", f"take back {bought + 1}")


def test_dangling_reference_against_database(loaded: Connection, tmp_path: Path) -> None:
    """An incremental load may reference rows already in the database, but not rows nowhere."""
    good = b"order_id,channel,placed_at,customer_id\nN1,web,2024-06-01T10:00:00Z,B-C0001\n"
    _write_raw(tmp_path / "ok", "orders.csv", good)
    import_directory(tmp_path / "ok", loaded)  # B-C0001 is in the database: accepted
    bad = b"order_id,channel,placed_at,customer_id\nN2,web,2024-06-01T10:00:00Z,C7777\n"
    _write_raw(tmp_path / "bad", "orders.csv", bad)
    _assert_refused(
        loaded, tmp_path / "bad", "orders.csv", 1, "customer_id", "'C7777' does not match any customer"
    )


def test_duplicate_key_across_chunks(loaded: Connection, tmp_path: Path) -> None:
    rows = "".join(f"Z{i},2024-01-01T00:00:00Z\n" for i in range(1, 30)) + "Z3,2024-01-02T00:00:00Z\n"
    _write_raw(tmp_path / "d", "customers.csv", ("customer_id,created_at\n" + rows).encode())
    _assert_refused(
        loaded,
        tmp_path / "d",
        "customers.csv",
        30,
        "customer_id",
        "duplicate key (customer_id='Z3') also at row 3",
        chunk_rows=7,
    )


def test_bad_value_in_parquet(loaded: Connection, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    table = pa.table({"location_id": ["L1", "L2"], "kind": ["store", "spaceport"]})
    pq.write_table(table, tmp_path / "d" / "locations.parquet")
    _assert_refused(loaded, tmp_path / "d", "locations.parquet", 2, "kind", "'spaceport' is not one of")


def test_float_money_in_parquet_with_fraction_of_cent(loaded: Connection, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    table = pa.table({"sku": ["N1"], "style_id": ["N"], "category": ["home"], "list_price": [12.345]})
    pq.write_table(table, tmp_path / "d" / "products.parquet")
    _assert_refused(loaded, tmp_path / "d", "products.parquet", 1, "list_price", "at most 2 decimal places")


def test_many_problems_are_summarised(loaded: Connection, tmp_path: Path) -> None:
    rows = "".join(f"Z{i},yesterday\n" for i in range(1, 60))
    _write_raw(tmp_path / "d", "customers.csv", ("customer_id,created_at\n" + rows).encode())
    error = _assert_refused(
        loaded, tmp_path / "d", "customers.csv", 1, "created_at", "is not an ISO 8601 timestamp"
    )
    assert "(and 58 more problems)" in str(error)
    assert len(error.problems) == 20


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(
        st.lists(st.text(alphabet="ab ;", max_size=3), min_size=0, max_size=5), min_size=1, max_size=12
    ),
    newline=st.sampled_from(["\n", "\r\n"]),
    final_newline=st.booleans(),
    cuts=st.lists(st.integers(0, 200), max_size=6),
)
def test_field_counts_block_by_block_agree_with_the_csv_module(rows, newline, final_newline, cuts) -> None:
    """The fast path (no quotes: fields counted with numpy, block by block) finds the same records and
    the same lines of the wrong width as a full csv-module pass, wherever the blocks are cut."""
    import csv
    import io

    from oms.importer import MAX_PROBLEMS, _FieldCounter

    text = newline.join(",".join(fields) for fields in [["h1", "h2", "h3"], *rows])
    text += newline if final_newline else ""
    data = text.encode()
    counter = _FieldCounter()
    edges = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    for start, end in itertools.pairwise(edges):
        counter.feed(data[start:end])
    counter.finish()
    reader = csv.reader(io.StringIO(text, newline=""))
    next(reader)
    records, wrong, end = 0, [], reader.line_num
    for fields in reader:
        if fields:
            records += 1
            if len(fields) != 3:
                wrong.append((records, end + 1, len(fields)))
        end = reader.line_num
    assert counter.records == records
    assert counter.wrong == wrong[:MAX_PROBLEMS]
