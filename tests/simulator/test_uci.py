"""The UCI Online Retail mapping, checked on the real file against figures computed here from the raw rows.

The expectations are plain pandas on the raw parquet, written without the mapper's helpers; the only
constants are the raw file's own figures from its SOURCE.txt.
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Connection, func, select

from oms import contract
from oms.importer import import_directory
from oms.tables import metadata
from simulator.uci import UciReport, convert_uci

UCI_FILE = Path(
    os.environ.get("RECOUP_UCI_FILE", "/work/shared/data/uci_online_retail/online_retail.parquet")
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

if not UCI_FILE.is_file():
    message = f"the UCI Online Retail file is not at {UCI_FILE} (set RECOUP_UCI_FILE)"
    if IN_CI:
        raise RuntimeError(message)
    pytest.skip(message, allow_module_level=True)

WRITTEN = (
    "customers",
    "locations",
    "products",
    "orders",
    "order_lines",
    "payments",
    "returns",
    "return_lines",
)


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    return pd.read_parquet(UCI_FILE)


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[UciReport, Path]:
    out_dir = tmp_path_factory.mktemp("uci")
    return convert_uci(UCI_FILE, out_dir), out_dir


@pytest.fixture(scope="module")
def report(converted: tuple[UciReport, Path]) -> UciReport:
    return converted[0]


@pytest.fixture(scope="module")
def written(converted: tuple[UciReport, Path]) -> dict[str, pd.DataFrame]:
    out_dir = converted[1]
    return {
        table: pd.read_csv(out_dir / f"{table}.csv", dtype=str, keep_default_na=False) for table in WRITTEN
    }


@pytest.fixture(scope="module")
def expected(raw: pd.DataFrame) -> dict:
    """What the mapping should give, worked out directly from the raw rows."""
    rows = raw.drop_duplicates().copy()
    rows["code"] = rows["StockCode"].str.upper()
    rows["customer"] = rows["CustomerID"].map(lambda v: "" if pd.isna(v) else str(int(v)))
    rows["position"] = range(len(rows))
    credit_invoice = rows["InvoiceNo"].str.startswith("C")
    bad_debt_invoice = rows["InvoiceNo"].str.startswith("A")
    goods = rows["code"].str.match(r"^[0-9]{5}[A-Z]*$")
    priced = rows["UnitPrice"] > 0

    by_code = {
        "postage": rows["code"].isin(["POST", "DOT", "C2"]),
        "fees": rows["code"].isin(["AMAZONFEE", "CRUK"]),
        "manual": rows["code"] == "M",
        "discount": rows["code"] == "D",
        "bank_charges": rows["code"] == "BANK CHARGES",
        "samples": rows["code"] == "S",
        "gift_vouchers": rows["code"].str.startswith("GIFT_0001_"),
    }
    assert (rows.loc[bad_debt_invoice, "code"] == "B").all()
    excluded = {"bad_debt": int(bad_debt_invoice.sum())}
    excluded |= {kind: int((mask & ~bad_debt_invoice).sum()) for kind, mask in by_code.items()}
    named = bad_debt_invoice.copy()
    for mask in by_code.values():
        named |= mask
    excluded["other_non_goods"] = int((~goods & ~named).sum())
    write_off = goods & ~priced & (rows["Quantity"] < 0) & ~credit_invoice & (rows["customer"] == "")
    excluded["stock_write_off"] = int(write_off.sum())
    excluded["zero_price"] = int((goods & ~priced & ~write_off).sum())

    sales = rows[goods & priced & ~credit_invoice & ~bad_debt_invoice & (rows["Quantity"] > 0)].copy()
    credits = rows[goods & priced & credit_invoice & (rows["Quantity"] < 0)].copy()
    excluded["sign_mismatch"] = len(rows) - sum(excluded.values()) - len(sales) - len(credits)

    # The linking rule by brute force: every earlier purchase of the sku by the customer, keep the latest.
    sales["invoice_time"] = sales.groupby("InvoiceNo")["InvoiceDate"].transform("min")
    credits["invoice_time"] = credits.groupby("InvoiceNo")["InvoiceDate"].transform("min")
    pairs = credits[credits["customer"] != ""].merge(
        sales[["customer", "code", "InvoiceNo", "invoice_time", "Quantity", "position"]],
        on=["customer", "code"],
        suffixes=("", "_sale"),
    )
    pairs = pairs[pairs["invoice_time_sale"] < pairs["invoice_time"]]
    latest = (
        pairs.sort_values(["invoice_time_sale", "InvoiceNo_sale", "position_sale"])
        .groupby("position")
        .tail(1)
    )
    credits["linked_order"] = (
        credits["position"].map(latest.set_index("position")["InvoiceNo_sale"]).fillna("")
    )
    # a purchase line gives back at most what it sold, to its credits in time order (file order on ties);
    # what a credit asks beyond that becomes a receiptless line of its credit invoice
    latest = latest.sort_values(["invoice_time", "position"]).copy()
    asked = -latest["Quantity"]
    before = asked.groupby(latest["position_sale"]).cumsum() - asked
    latest["taken"] = asked.where(asked < latest["Quantity_sale"] - before, latest["Quantity_sale"] - before)
    latest["taken"] = latest["taken"].clip(lower=0)
    taken = credits["position"].map(latest.set_index("position")["taken"]).fillna(0).astype(int)
    asked_all = -credits["Quantity"]
    lines = pd.concat(
        [
            credits[taken > 0].assign(quantity=taken[taken > 0]),
            credits[taken < asked_all].assign(
                quantity=(asked_all - taken)[taken < asked_all], linked_order=""
            ),
        ]
    )

    customers = set(sales["customer"]) | set(credits["customer"])
    return {
        "rows": rows,
        "excluded": excluded,
        "sales": sales,
        "credits": credits,
        "orders": sales["InvoiceNo"].nunique(),
        "guest_orders": sales.loc[sales["customer"] == "", "InvoiceNo"].nunique(),
        "order_value": round(Decimal(str(round((sales["Quantity"] * sales["UnitPrice"]).sum(), 2))), 2),
        "lines": lines,
        "returns": len(lines[["InvoiceNo", "linked_order"]].drop_duplicates()),
        "returned_value": round(
            Decimal(str(round((-credits["Quantity"] * credits["UnitPrice"]).sum(), 2))), 2
        ),
        "linked": int((taken > 0).sum()),
        "over_returned": int((latest["taken"] < -latest["Quantity"]).sum()),
        "customers": len(customers - {""}),
        "products": pd.concat([sales["code"], credits["code"]]).nunique(),
    }


def _cents(values: pd.Series) -> int:
    return int(values.map(lambda v: int(Decimal(v) * 100)).sum())


def test_raw_file_has_the_figures_of_its_source_notes(raw: pd.DataFrame) -> None:
    assert len(raw) == 541_909
    assert int(raw.duplicated().sum()) == 5_268
    assert raw["InvoiceNo"].nunique() == 25_900
    assert raw["StockCode"].nunique() == 4_070
    assert raw["CustomerID"].nunique() == 4_372
    assert raw["Country"].nunique() == 38
    assert int(raw["Quantity"].sum()) == 5_176_450
    assert round((raw["Quantity"] * raw["UnitPrice"]).sum(), 2) == 9_747_747.93
    credit = raw["InvoiceNo"].str.startswith("C")
    assert int(credit.sum()) == 9_288
    assert raw.loc[credit, "InvoiceNo"].nunique() == 3_836
    assert int((~credit & (raw["Quantity"] < 0)).sum()) == 1_336
    assert int(raw["InvoiceNo"].str.startswith("A").sum()) == 3
    assert int((raw["Description"] == "nan").sum()) == 1_454


def test_duplicates_and_exclusions(report: UciReport, expected: dict) -> None:
    assert report.source_rows == 541_909
    assert report.duplicate_rows == 5_268
    assert report.excluded == expected["excluded"]
    assert report.excluded["postage"] > 0 and report.excluded["stock_write_off"] > 0
    kept = report.order_lines + report.return_lines - report.split_return_lines
    assert report.source_rows == report.duplicate_rows + report.excluded_lines + kept


def test_orders_lines_and_payments(
    report: UciReport, expected: dict, written: dict[str, pd.DataFrame]
) -> None:
    assert report.orders == expected["orders"] == len(written["orders"]) == len(written["payments"])
    assert report.guest_orders == expected["guest_orders"] == (written["orders"]["customer_id"] == "").sum()
    assert report.order_lines == len(expected["sales"]) == len(written["order_lines"])
    assert report.order_value == expected["order_value"]
    assert Decimal(_cents(written["payments"]["amount"])).scaleb(-2) == expected["order_value"]
    lines = written["order_lines"]
    line_numbers = lines.groupby("order_id", sort=False)["line_no"].agg(lambda s: list(map(int, s)))
    assert all(numbers == list(range(1, len(numbers) + 1)) for numbers in line_numbers)
    first = expected["sales"].iloc[0]
    assert lines.iloc[0][["order_id", "sku", "quantity"]].tolist() == [
        first["InvoiceNo"],
        first["code"],
        str(first["Quantity"]),
    ]


def test_customers_and_products(report: UciReport, expected: dict, written: dict[str, pd.DataFrame]) -> None:
    assert report.customers == expected["customers"] == len(written["customers"])
    assert report.products == expected["products"] == len(written["products"])
    products = written["products"].set_index("sku")
    assert (products["style_id"] == products.index.str[:5]).all()
    assert (products["category"] != "").all() and products["category"].nunique() >= 8
    # list price: the most frequent sale price (ties: the higher)
    sales = expected["sales"]
    counted = sales.groupby(["code", "UnitPrice"]).size().rename("n").reset_index()
    mode = counted.sort_values(["n", "UnitPrice"]).groupby("code").tail(1).set_index("code")["UnitPrice"]
    sold = products.loc[mode.index, "list_price"].astype(float)
    assert (sold.round(2) == mode.round(2)).all()
    assert products.loc["85123A", "description"] == "WHITE HANGING HEART T-LIGHT HOLDER"


def test_returns_and_refunds(report: UciReport, expected: dict, written: dict[str, pd.DataFrame]) -> None:
    credits, lines = expected["credits"], expected["lines"]
    assert report.return_lines == len(lines) == len(written["return_lines"])
    assert report.split_return_lines == len(lines) - len(credits)
    assert report.returns == expected["returns"] == len(written["returns"])
    assert report.returned_value == expected["returned_value"]
    assert Decimal(_cents(written["return_lines"]["refund_amount"])).scaleb(-2) == expected["returned_value"]
    assert report.linked_return_lines == expected["linked"]
    assert report.receiptless_return_lines == len(lines) - expected["linked"]
    assert report.receiptless_returns == (written["returns"]["order_id"] == "").sum()
    assert report.over_returned_lines == expected["over_returned"]
    # returns of one credit invoice: one per linked order plus one receiptless, ids numbered from 1
    returns = written["returns"]
    invoice = returns["return_id"].str.rsplit("-", n=1).str[0]
    number = returns["return_id"].str.rsplit("-", n=1).str[1].astype(int)
    assert (number.groupby(invoice).max() == invoice.value_counts().sort_index()).all()
    assert set(invoice) == set(credits["InvoiceNo"])
    keyed = returns.assign(invoice=invoice)
    assert not keyed.duplicated(["invoice", "order_id"]).any()


def test_linked_return_lines_point_at_an_earlier_purchase_of_the_same_sku_by_the_same_customer(
    expected: dict, written: dict[str, pd.DataFrame]
) -> None:
    lines = written["return_lines"].merge(written["returns"], on="return_id")
    linked = lines[lines["order_line_no"] != ""]
    assert len(linked) == expected["linked"]
    joined = linked.merge(
        written["order_lines"],
        left_on=["order_id", "order_line_no"],
        right_on=["order_id", "line_no"],
        suffixes=("", "_ordered"),
    ).merge(written["orders"], on="order_id", suffixes=("", "_order"))
    assert len(joined) == len(linked)
    assert (joined["sku"] == joined["sku_ordered"]).all()
    assert (joined["customer_id"] == joined["customer_id_order"]).all() and (
        joined["customer_id"] != ""
    ).all()
    assert (pd.to_datetime(joined["placed_at"]) < pd.to_datetime(joined["requested_at"])).all()

    # the same pairs as the brute-force linking of the raw rows: (credit invoice, sku, quantity) -> order
    lines_wanted = expected["lines"]
    want = lines_wanted.assign(quantity=lines_wanted["quantity"].astype(str))[
        ["InvoiceNo", "code", "quantity", "linked_order"]
    ]
    got = lines.assign(invoice=lines["return_id"].str.rsplit("-", n=1).str[0])[
        ["invoice", "sku", "quantity", "order_id"]
    ]
    want_counts = want.value_counts().sort_index()
    got_counts = got.value_counts().sort_index()
    assert want_counts.to_list() == got_counts.to_list()
    assert want_counts.index.to_list() == got_counts.index.to_list()

    # and each linked order line is a raw sale row of that customer, sku and quantity
    sale_rows = expected["sales"][["InvoiceNo", "code", "customer", "Quantity"]].astype(str).drop_duplicates()
    found = joined.merge(
        sale_rows,
        left_on=["order_id", "sku", "customer_id", "quantity_ordered"],
        right_on=["InvoiceNo", "code", "customer", "Quantity"],
        how="left",
        indicator=True,
    )
    assert (found.drop_duplicates(["return_id", "line_no"])["_merge"] == "both").all()


def test_timestamps_are_uk_local_time_written_in_utc(
    raw: pd.DataFrame, written: dict[str, pd.DataFrame]
) -> None:
    placed = written["orders"].set_index("order_id")["placed_at"]
    winter = raw[raw["InvoiceNo"] == "536365"]["InvoiceDate"].min()  # GMT = UTC
    summer = raw[raw["InvoiceDate"].dt.month == 7].iloc[0]  # BST = UTC+1
    assert placed["536365"] == winter.strftime("%Y-%m-%dT%H:%M:%SZ")
    expected_summer = (summer["InvoiceDate"] - pd.Timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert placed[summer["InvoiceNo"]] == expected_summer


def test_report_prints_the_figures(report: UciReport) -> None:
    text = str(report)
    assert text.splitlines() == report.lines()
    assert "541,909" in text and "5,268" in text
    assert f"{report.return_lines:,}" in text and f"{report.returned_value:,}" in text
    assert "postage" in text and "stock write-offs" in text
    assert report.seconds < 60


def test_import_loads_the_converted_file(
    connection: Connection, converted: tuple[UciReport, Path], written: dict[str, pd.DataFrame]
) -> None:
    import_report = import_directory(converted[1], connection)
    assert import_report.rows == sum(len(frame) for frame in written.values())
    for spec in contract.FILES:
        count = connection.execute(select(func.count()).select_from(metadata.tables[spec.table])).scalar_one()
        assert count == len(written.get(spec.table, ())), spec.table
    refunded = connection.execute(
        select(func.sum(metadata.tables["return_lines"].c.refund_amount))
    ).scalar_one()
    assert round(Decimal(str(refunded)), 2) == converted[0].returned_value
