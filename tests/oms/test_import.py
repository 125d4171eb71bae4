"""Importing and exporting the data contract: the happy paths, idempotency, upserts and round trips."""

from __future__ import annotations

import csv
import datetime as dt
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from sqlalchemy import Connection, delete, func, select, text

from oms import contract
from oms.exporter import export_directory
from oms.importer import import_directory
from oms.tables import Customer, FraudReview, OrderLine, Product, Return, ReturnLine, metadata
from tests.factories import fingerprint, sample_rows, write_tables


def _count(connection: Connection, table: str) -> int:
    return connection.execute(select(func.count()).select_from(metadata.tables[table])).scalar_one()


def _clear(connection: Connection) -> None:
    for table in reversed(metadata.sorted_tables):
        connection.execute(delete(table))


def test_import_loads_every_row(connection: Connection, tmp_path: Path) -> None:
    tables = sample_rows()
    report = import_directory(write_tables(tmp_path / "d", tables), connection)
    for spec in contract.FILES:
        assert _count(connection, spec.table) == len(tables[spec.table]), spec.table
    assert report.rows == sum(len(rows) for rows in tables.values())
    assert [f.table for f in report.files] == [s.table for s in contract.FILES]


def test_reimport_is_a_no_op(connection: Connection, tmp_path: Path) -> None:
    directory = write_tables(tmp_path / "d", sample_rows())
    import_directory(directory, connection)
    before = fingerprint(connection)
    report = import_directory(directory, connection)
    assert fingerprint(connection) == before
    assert all(f.new_rows == 0 for f in report.files)


def test_reimport_updates_changed_rows_only_in_given_columns(connection: Connection, tmp_path: Path) -> None:
    tables = sample_rows()
    import_directory(write_tables(tmp_path / "a", tables), connection)
    connection.execute(
        Return.__table__.update().values(rma_number="RMA-1").where(Return.return_id == "R00001")
    )
    tables["customers"][0]["region"] = "west"
    tables["customers"].append({**tables["customers"][1], "customer_id": "C9999"})
    tables["returns"][0]["refund_method"] = "store_credit"
    import_directory(write_tables(tmp_path / "b", tables), connection)
    assert (
        connection.execute(select(Customer.region).where(Customer.customer_id == "C0001")).scalar_one()
        == "west"
    )
    assert _count(connection, "customers") == 21
    updated = connection.execute(select(Return).where(Return.return_id == "R00001")).one()
    assert updated.refund_method == "store_credit"
    assert updated.rma_number == "RMA-1"  # lifecycle columns are not part of the contract: untouched


def test_chunked_import_equals_single_chunk(engine, connection: Connection, tmp_path: Path) -> None:
    directory = write_tables(tmp_path / "d", sample_rows())
    import_directory(directory, connection, chunk_rows=7)
    chunked = fingerprint(connection)
    _clear(connection)
    import_directory(directory, connection, chunk_rows=1_000_000)
    whole = fingerprint(connection)
    for table in ("customers", "orders", "order_lines", "payments", "returns", "return_lines"):
        assert chunked[table] == whole[table], table


def test_timestamps_naive_means_utc_and_offsets_convert(connection: Connection, tmp_path: Path) -> None:
    tables = {
        "customers": [
            {"customer_id": "A", "created_at": "2024-03-01T12:00:00+02:00"},
            {"customer_id": "B", "created_at": "2024-03-01T12:00:00"},
            {"customer_id": "C", "created_at": "2024-03-01"},
            {"customer_id": "D", "created_at": "2024-03-01T12:00:00.123456Z"},
            {"customer_id": "E", "created_at": "2024-03-01 07:30:00-05:00"},
        ]
    }
    import_directory(write_tables(tmp_path / "d", tables), connection)
    got = dict(connection.execute(select(Customer.customer_id, Customer.created_at)).all())
    utc = dt.UTC
    assert got == {
        "A": dt.datetime(2024, 3, 1, 10, 0, tzinfo=utc),
        "B": dt.datetime(2024, 3, 1, 12, 0, tzinfo=utc),
        "C": dt.datetime(2024, 3, 1, 0, 0, tzinfo=utc),
        "D": dt.datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=utc),
        "E": dt.datetime(2024, 3, 1, 12, 30, tzinfo=utc),
    }


def test_defaults_money_and_normalised_enums(connection: Connection, tmp_path: Path) -> None:
    tables = sample_rows()
    for row in tables["products"]:
        del row["return_window_days"], row["returnable"]
    for row in tables["order_lines"]:
        row["discount"] = ""
    for row in tables["returns"]:
        row["status"] = ""
        row["channel"] = row["channel"].upper()
    tables["returns"][0]["received_at"] = ""
    import_directory(write_tables(tmp_path / "d", tables), connection)
    product = connection.execute(select(Product).limit(1)).one()
    assert product.return_window_days == 30 and product.returnable is True
    assert set(connection.execute(select(OrderLine.discount)).scalars()) == {Decimal("0.00")}
    price = (
        connection.execute(select(OrderLine.unit_price).where(OrderLine.order_id == "O00001"))
        .scalars()
        .first()
    )
    assert isinstance(price, Decimal) and price == Decimal(tables["order_lines"][0]["unit_price"])
    statuses = dict(connection.execute(select(Return.return_id, Return.status)).all())
    assert statuses["R00001"] == "authorized"
    assert set(statuses.values()) == {"authorized", "received"}
    assert set(connection.execute(select(Return.channel)).scalars()) <= {"store", "mail"}


def test_return_lines_carry_their_order(connection: Connection, tmp_path: Path) -> None:
    import_directory(write_tables(tmp_path / "d", sample_rows()), connection)
    rows = connection.execute(
        select(ReturnLine.order_id, Return.order_id).join(Return, Return.return_id == ReturnLine.return_id)
    ).all()
    assert rows and all(line_order == header_order for line_order, header_order in rows)


def test_incremental_load_references_database_rows(connection: Connection, tmp_path: Path) -> None:
    tables = sample_rows()
    later = {name: tables.pop(name) for name in ("returns", "return_lines", "fraud_reviews")}
    import_directory(write_tables(tmp_path / "history", tables), connection)
    import_directory(write_tables(tmp_path / "later", later), connection)
    assert _count(connection, "return_lines") == len(later["return_lines"])
    assert _count(connection, "fraud_reviews") == len(later["fraud_reviews"])


def _read_csv_dir(directory: Path) -> dict[str, pd.DataFrame]:
    return {
        path.stem: pd.read_csv(path, dtype=str, keep_default_na=False)
        .sort_values(list(contract.BY_TABLE[path.stem].key))
        .reset_index(drop=True)
        for path in sorted(directory.glob("*.csv"))
    }


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_round_trip(connection: Connection, tmp_path: Path, fmt: str) -> None:
    tables = sample_rows()
    import_directory(write_tables(tmp_path / "in", tables), connection)
    first = tmp_path / f"out1-{fmt}"
    counts = export_directory(first, connection, fmt=fmt)
    assert counts == {name: len(rows) for name, rows in tables.items()}
    _clear(connection)
    import_directory(first, connection)
    second = tmp_path / "out2"
    export_directory(second, connection, fmt="csv")
    third = tmp_path / "out3"
    _clear(connection)
    import_directory(second, connection)
    export_directory(third, connection, fmt="csv")
    for path in second.iterdir():  # export -> import -> export is byte-identical
        assert path.read_bytes() == (third / path.name).read_bytes(), path.name
    # and the exported values are the imported ones, up to formatting
    exported = _read_csv_dir(second)
    for name, rows in tables.items():
        spec = contract.BY_TABLE[name]
        original = pd.DataFrame(rows).set_index(list(spec.key))
        exported_rows = exported[name].set_index(list(spec.key))
        assert sorted(exported_rows.index) == sorted(original.index), name
        for column in spec.columns:
            if column.name not in original:
                continue
            got = exported_rows[column.name]
            want = original[column.name].reindex(got.index)
            if column.kind == "timestamp":
                assert (pd.to_datetime(got, utc=True) == pd.to_datetime(want, utc=True)).all(), (
                    name,
                    column.name,
                )
            elif column.kind in ("money", "signed_money"):
                assert [Decimal(v or "0") for v in got] == [Decimal(v or "0") for v in want], (
                    name,
                    column.name,
                )
            else:
                assert list(got) == list(want), (name, column.name)


FORMULAS = [
    '=HYPERLINK("http://x","y")',
    "+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(A1)",
    "'=already",
    "''+twice",
    "plain 'quote",
]


def test_csv_export_escapes_formula_cells_and_import_undoes_it(
    connection: Connection, tmp_path: Path
) -> None:
    tables = sample_rows()
    for row, formula in zip(tables["customers"], FORMULAS, strict=False):
        row["region"] = formula
    source = write_tables(tmp_path / "in", tables)
    customers = pd.read_csv(source / "customers.csv", dtype=str, keep_default_na=False)
    customers.to_parquet(source / "customers.parquet")  # the values as they are, with no CSV escape
    (source / "customers.csv").unlink()
    import_directory(source, connection)
    for fmt in ("csv", "parquet"):
        export_directory(tmp_path / fmt, connection, fmt=fmt)
    written = pd.read_csv(tmp_path / "csv" / "customers.csv", dtype=str, keep_default_na=False)
    cells = written.set_index("customer_id")["region"]
    for row, formula in zip(tables["customers"], FORMULAS[:-1], strict=False):
        assert cells[row["customer_id"]] == "'" + formula  # a spreadsheet shows it as text
    assert cells[tables["customers"][len(FORMULAS) - 1]["customer_id"]] == "plain 'quote"
    parquet = pq.read_table(tmp_path / "parquet" / "customers.parquet").to_pandas().set_index("customer_id")
    assert parquet["region"][tables["customers"][0]["customer_id"]] == FORMULAS[0]  # Parquet unchanged
    for fmt in ("csv", "parquet"):  # both read back as they were
        _clear(connection)
        import_directory(tmp_path / fmt, connection)
        regions = dict(connection.execute(text("SELECT customer_id, region FROM customers")).all())
        for row, formula in zip(tables["customers"], FORMULAS, strict=False):
            assert regions[row["customer_id"]] == formula, fmt


def test_fraud_reviews_keep_their_natural_key(connection: Connection, tmp_path: Path) -> None:
    tables = sample_rows()
    directory = write_tables(tmp_path / "d", tables)
    import_directory(directory, connection)
    import_directory(directory, connection)
    assert _count(connection, "fraud_reviews") == len(tables["fraud_reviews"])
    outcome = (
        connection.execute(select(FraudReview.outcome).order_by(FraudReview.reviewed_at)).scalars().all()
    )
    assert len(outcome) == len(tables["fraud_reviews"])


def test_csv_with_bom_and_crlf(connection: Connection, tmp_path: Path) -> None:
    directory = tmp_path / "d"
    directory.mkdir()
    text = 'location_id,kind,name\r\nL1,store,"Shop, with comma"\r\nL2,warehouse,Depot\r\n'
    (directory / "locations.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    import_directory(directory, connection)
    rows = (
        connection.execute(select(metadata.tables["locations"].c.name).order_by("location_id"))
        .scalars()
        .all()
    )
    assert rows == ["Shop, with comma", "Depot"]


def test_exported_csv_is_readable_by_csv_module(connection: Connection, tmp_path: Path) -> None:
    import_directory(write_tables(tmp_path / "in", sample_rows()), connection)
    export_directory(tmp_path / "out", connection)
    with open(tmp_path / "out" / "returns.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0]["requested_at"].endswith("Z")
