"""Merchandising and operations analytics, checked against the simulator's truth and independent counts.

One simulated retailer is built per module and imported into a SQLite file; the expectations are plain
pandas on the CSV files (not the analytics helpers) or the simulator's `_truth/`. Small hand-made frames
cover what imported history cannot hold (disposal and refund times, exchanges).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Connection, Engine

from features import analytics
from features.analytics import AnalyticsInputs
from oms.db import make_engine
from oms.importer import import_directory
from simulator.retailer import SimulationConfig, simulate
from simulator.uci import convert_uci

CONFIG = SimulationConfig(customers=20_000, months=12, seed=11)
MIN_UNITS = 30
GRACE_DAYS = 14
RATES_AS_OF = pd.Timestamp("2024-10-01T00:00:00Z")
UCI_FILE = Path(
    os.environ.get("RECOUP_UCI_FILE", "/work/shared/data/uci_online_retail/online_retail.parquet")
)


def _imported_engine(template: Path, directory: Path, source: Path) -> Engine:
    path = directory / "recoup.db"
    shutil.copyfile(template, path)
    engine = make_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        import_directory(source, connection)
    return engine


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("analytics") / "retailer"
    simulate(CONFIG, out)
    return out


@pytest.fixture(scope="module")
def files(simulated: Path) -> dict[str, pd.DataFrame]:
    """The CSV files as plain pandas, with timestamps parsed (the independent side of the checks)."""
    frames = {path.stem: pd.read_csv(path) for path in simulated.glob("*.csv")}
    frames["styles"] = pd.read_csv(simulated / "_truth" / "styles.csv")
    for name, column in (
        ("orders", "placed_at"),
        ("returns", "requested_at"),
        ("returns", "received_at"),
        ("returns", "refunded_at"),
        ("return_lines", "disposed_at"),
    ):
        frames[name][column] = pd.to_datetime(frames[name][column], utc=True)
    return frames


@pytest.fixture(scope="module")
def inputs(
    simulated: Path, sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> AnalyticsInputs:
    engine = _imported_engine(sqlite_template, tmp_path_factory.mktemp("analytics-db"), simulated)
    try:
        return analytics.load_inputs(engine)
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def tables(inputs: AnalyticsInputs) -> dict[str, pd.DataFrame]:
    return analytics.build_all(inputs, min_units=MIN_UNITS, grace_days=GRACE_DAYS)


@pytest.fixture(scope="module")
def as_of(tables: dict[str, pd.DataFrame]) -> pd.Timestamp:
    return tables["analytics_return_rates"]["as_of"].iloc[0]


# --- the catalogue: abnormal items and fit -----------------------------------------------------------


def _styles_with_truth(tables: dict[str, pd.DataFrame], files: dict[str, pd.DataFrame]) -> pd.DataFrame:
    items = tables["analytics_abnormal_items"]
    styles = items[items["level"] == "style_id"].merge(
        files["styles"][["style_id", "quality", "described", "fit_bias"]], on="style_id"
    )
    styles["defect_prone"] = styles["quality"] >= 2.5  # lemons: quality x5
    styles["misdescribed"] = styles["described"] >= 2.5  # not-as-described x5
    styles["misfit"] = styles["fit_bias"] != 0
    styles["clean"] = ~(styles["defect_prone"] | styles["misdescribed"] | styles["misfit"])
    return styles


def test_lemons_and_misdescribed_styles_are_flagged_far_more_than_clean_ones(
    tables: dict[str, pd.DataFrame], files: dict[str, pd.DataFrame]
) -> None:
    styles = _styles_with_truth(tables, files)
    eligible = styles[styles["eligible"]]
    clean_rate = eligible.loc[eligible["clean"], "flagged"].mean()
    bad = eligible[(eligible["defect_prone"] | eligible["misdescribed"]) & ~eligible["misfit"]]
    assert len(bad) >= 20 and eligible["clean"].sum() >= 200
    assert clean_rate <= 0.04
    assert bad["flagged"].mean() >= 5 * clean_rate
    assert bad["flagged"].mean() >= 0.1
    # precision: flagged styles are almost all truly bad (lemon, misdescribed or mis-sized)
    truly_bad = ~eligible["clean"]
    precision = truly_bad[eligible["flagged"]].mean()
    assert eligible["flagged"].sum() >= 30
    assert precision >= 0.7 and precision >= 3 * truly_bad.mean()
    # the reasons point at the cause
    flagged = eligible[eligible["flagged"]]
    lemon_flags = flagged[flagged["defect_prone"] & ~flagged["misfit"]]["flag_reasons"]
    assert lemon_flags.str.contains("defective|overall").mean() >= 0.75
    misfit_flags = flagged[flagged["misfit"]]["flag_reasons"]
    assert misfit_flags.str.contains("doesnt_fit").mean() >= 0.7


def test_no_item_under_the_minimum_volume_is_flagged(
    tables: dict[str, pd.DataFrame], inputs: AnalyticsInputs
) -> None:
    items = tables["analytics_abnormal_items"]
    assert set(items["level"]) == {"style_id", "sku"}
    assert not (items["flagged"] & (items["units_sold"] < MIN_UNITS)).any()
    assert (items["eligible"] == (items["units_sold"] >= MIN_UNITS)).all()
    assert items.loc[items["flagged"], "excess_units_returned"].gt(0).mean() >= 0.9
    assert (items.loc[items["flagged"], "units_returned"] > 0).all()
    stricter = analytics.abnormal_items(inputs, "style_id", min_units=200, grace_days=GRACE_DAYS)
    assert not (stricter["flagged"] & (stricter["units_sold"] < 200)).any()
    loose = items[items["level"] == "style_id"].set_index("item_id")["flagged"]
    assert loose.reindex(stricter.loc[stricter["flagged"], "item_id"]).all()


def test_smoothed_rate_lies_between_the_item_and_its_category(tables: dict[str, pd.DataFrame]) -> None:
    items = tables["analytics_abnormal_items"].dropna(subset=["category_rate"])
    low = np.minimum(items["return_rate_units"], items["category_rate"]) - 1e-9
    high = np.maximum(items["return_rate_units"], items["category_rate"]) + 1e-9
    assert items["smoothed_rate"].between(low, high).all()
    small = items[items["units_sold"] < 5]
    big = items[items["units_sold"] >= 200]
    distance = (items["smoothed_rate"] - items["category_rate"]).abs()
    raw_distance = (items["return_rate_units"] - items["category_rate"]).abs()
    # little data: pulled most of the way to the category; much data: stays near its own rate
    assert (distance[small.index] / raw_distance[small.index].where(lambda d: d > 0)).median() < 0.5
    assert (distance[big.index] / raw_distance[big.index].where(lambda d: d > 0)).median() > 0.5
    # (where the category never returns anything the posterior is too skewed for this to hold)
    returning = items[items["category_rate"] > 0.001]
    assert (returning["rate_lower"] <= returning["smoothed_rate"]).all()
    assert (returning["smoothed_rate"] <= returning["rate_upper"]).all()


def test_runs_small_styles_get_the_fit_signal(
    tables: dict[str, pd.DataFrame], files: dict[str, pd.DataFrame]
) -> None:
    signals = tables["analytics_fit_signals"].merge(files["styles"][["style_id", "fit_bias"]], on="style_id")
    rated = signals[signals["fit_signal"] != "low_volume"]
    signalled = rated["fit_signal"].isin(["fit_issue", "runs_small", "runs_large"])
    runs_small = signalled[rated["fit_bias"] == -1]
    true_fit = signalled[rated["fit_bias"] == 0]
    assert len(runs_small) >= 20 and len(true_fit) >= 100
    assert runs_small.mean() >= 0.5
    assert true_fit.mean() <= 0.05
    assert runs_small.mean() >= 10 * max(true_fit.mean(), 0.01)
    # The simulator raises doesnt_fit for runs-large styles exactly as for runs-small ones and leaves
    # no directional trace (no exchanges; bracketers keep their own size), so the direction is not
    # identifiable from its output: no style may be given one beyond chance.
    assert signalled[rated["fit_bias"] == 1].mean() >= 0.5
    assert rated["fit_signal"].isin(["runs_small", "runs_large"]).mean() <= 0.03
    curve = tables["analytics_size_curve"]
    assert set(curve["style_id"]) == set(signals["style_id"])
    by_style = curve.groupby("style_id")[["units_sold", "fit_returns"]].sum()
    totals = signals.set_index("style_id")[["units_sold", "fit_returns"]]
    pd.testing.assert_frame_equal(
        by_style.sort_index(), totals.sort_index(), check_dtype=False, check_index_type=False
    )
    shares = curve.groupby("style_id")["share_of_style_units"].sum()
    assert np.allclose(shares, 1.0)


# --- hand-made frames for what imported history cannot hold ------------------------------------------

_TIMESTAMPS = {"placed_at", "requested_at", "received_at", "disposed_at", "created_at"}
_MONEY = {"list_price", "unit_cost", "unit_price", "discount", "refund_amount", "recovery_value", "amount"}
_COUNTS = {"line_no", "quantity", "return_window_days"}
_NULLABLE_COUNTS = {"order_line_no", "received_quantity"}


def _inputs(**rows: list[dict]) -> AnalyticsInputs:
    """AnalyticsInputs typed as oms.frames types them, from lists of row dicts (missing = null)."""
    frames = {}
    for table, columns in analytics.INPUT_COLUMNS.items():
        given = pd.DataFrame(rows.get(table, []))
        frame = pd.DataFrame({c: given[c] if c in given else pd.Series([None] * len(given)) for c in columns})
        for column in columns:
            if column in _TIMESTAMPS:
                frame[column] = pd.to_datetime(frame[column], utc=True).dt.as_unit("us")
            elif column in _MONEY:
                frame[column] = pd.to_numeric(frame[column]).astype("float64")
            elif column in _COUNTS:
                frame[column] = pd.to_numeric(frame[column]).astype("int64")
            elif column in _NULLABLE_COUNTS:
                frame[column] = pd.to_numeric(frame[column]).astype("Int64")
            else:
                frame[column] = frame[column].astype("string")
        frames[table] = frame
    return AnalyticsInputs(**frames)


def _sized_catalogue() -> AnalyticsInputs:
    """Seven apparel styles in S/M/L: A is exchanged upwards, G downwards, N1-N5 both ways, rarely."""
    styles = ["A", "G", "N1", "N2", "N3", "N4", "N5"]
    sizes = ["S", "M", "L"]
    products = [
        {
            "sku": f"{s}-{z}",
            "style_id": s,
            "category": "apparel",
            "size": z,
            "list_price": 20,
            "return_window_days": 30,
        }
        for s in styles
        for z in sizes
    ]
    orders, lines, returns, return_lines = [], [], [], []
    for style in styles:
        for i in range(120):
            order_id = f"O-{style}-{i}"
            size = sizes[i % 3]
            placed = pd.Timestamp("2024-01-10T10:00Z") + pd.Timedelta(hours=i)
            orders.append({"order_id": order_id, "channel": "web", "location_id": "W", "placed_at": placed})
            lines.append(
                {
                    "order_id": order_id,
                    "line_no": 1,
                    "sku": f"{style}-{size}",
                    "quantity": 1,
                    "unit_price": 20,
                }
            )
            if style == "A" and size in ("S", "M") and i < 54:
                replacement = {"S": "M", "M": "L"}[size]
            elif style == "G" and size in ("M", "L") and i < 54:
                replacement = {"M": "S", "L": "M"}[size]
            elif style.startswith("N") and i < 6:
                replacement = (
                    {"S": "M", "M": "S", "L": "M"}[size]
                    if i % 2 == 0
                    else {"S": "M", "M": "L", "L": "M"}[size]
                )
            else:
                continue
            return_id = f"R-{order_id}"
            returns.append(
                {
                    "return_id": return_id,
                    "order_id": order_id,
                    "channel": "mail",
                    "location_id": "RC",
                    "requested_at": placed + pd.Timedelta(days=5),
                    "status": "authorized",
                }
            )
            return_lines.append(
                {
                    "return_id": return_id,
                    "line_no": 1,
                    "order_line_no": 1,
                    "sku": f"{style}-{size}",
                    "quantity": 1,
                    "reason": "doesnt_fit",
                    "refund_amount": 0,
                    "replacement_sku": f"{style}-{replacement}",
                }
            )
    return _inputs(
        products=products, orders=orders, order_lines=lines, returns=returns, return_lines=return_lines
    )


def test_direction_comes_from_exchanges_to_other_sizes() -> None:
    inputs = _sized_catalogue()
    signals = analytics.fit_signals(inputs, "2024-06-01", min_units=MIN_UNITS).set_index("style_id")
    assert signals.loc["A", "exchanges_up"] == 36 and signals.loc["A", "exchanges_down"] == 0
    assert signals.loc["A", "fit_signal"] == "runs_small"
    assert signals.loc["G", "fit_signal"] == "runs_large"
    assert (signals.loc[["N1", "N2", "N3", "N4", "N5"], "fit_signal"] == "ok").all()
    assert signals.loc["A", "fit_rate"] == pytest.approx(36 / 120)
    curve = analytics.size_curve(inputs, "2024-06-01")
    a = curve[curve["style_id"] == "A"].set_index("size")
    assert list(a.index) == ["S", "M", "L"]  # in size order
    assert a.loc["L", "fit_returns"] == 0 and a.loc["S", "fit_returns"] == 18
    assert a.loc["S", "fit_index_vs_style"] == pytest.approx((18 / 40) / (36 / 120))


def test_direction_comes_from_the_size_kept_in_bracketed_orders() -> None:
    """Buying S and M of a style and keeping M, sending S back as doesnt_fit, says the style runs small."""
    products = [
        {
            "sku": f"{s}-{z}",
            "style_id": s,
            "category": "apparel",
            "size": z,
            "list_price": 20,
            "return_window_days": 30,
        }
        for s in ("A", "B", "C", "D")
        for z in ("S", "M", "L")
    ]
    orders, lines, returns, return_lines = [], [], [], []
    for style in ("A", "B", "C", "D"):
        for i in range(60):
            order_id = f"O-{style}-{i}"
            placed = pd.Timestamp("2024-01-10T10:00Z") + pd.Timedelta(hours=i)
            orders.append({"order_id": order_id, "channel": "web", "location_id": "W", "placed_at": placed})
            bracket = i < (20 if style == "A" else 4)
            small, large = ("S", "M") if i % 2 == 0 else ("M", "L")
            lines.append(
                {
                    "order_id": order_id,
                    "line_no": 1,
                    "sku": f"{style}-{small}",
                    "quantity": 1,
                    "unit_price": 20,
                }
            )
            if not bracket:
                continue
            lines.append(
                {
                    "order_id": order_id,
                    "line_no": 2,
                    "sku": f"{style}-{large}",
                    "quantity": 1,
                    "unit_price": 20,
                }
            )
            # style A: the smaller one goes back; the others: alternately the smaller and the larger
            back = 1 if style == "A" or i % 2 == 0 else 2
            returns.append(
                {
                    "return_id": f"R-{order_id}",
                    "order_id": order_id,
                    "channel": "mail",
                    "requested_at": placed + pd.Timedelta(days=4),
                    "status": "completed",
                }
            )
            return_lines.append(
                {
                    "return_id": f"R-{order_id}",
                    "line_no": 1,
                    "order_line_no": back,
                    "sku": lines[-2 if back == 1 else -1]["sku"],
                    "quantity": 1,
                    "reason": "doesnt_fit",
                }
            )
    inputs = _inputs(
        products=products, orders=orders, order_lines=lines, returns=returns, return_lines=return_lines
    )
    signals = analytics.fit_signals(inputs, "2024-06-01", min_units=MIN_UNITS).set_index("style_id")
    assert signals.loc["A", "bracket_kept_larger"] == 20 and signals.loc["A", "bracket_kept_smaller"] == 0
    assert signals.loc["B", "bracket_kept_larger"] == 2 and signals.loc["B", "bracket_kept_smaller"] == 2
    assert signals.loc["A", "direction"] == "up"
    assert signals.loc["A", "fit_signal"] == "runs_small"
    assert signals.loc[["B", "C", "D"], "fit_signal"].eq("ok").all()


# --- rates against an independent count ---------------------------------------------------------------


def _independent_sales(
    files: dict[str, pd.DataFrame], as_of: pd.Timestamp
) -> tuple[pd.DataFrame, pd.DataFrame]:
    products = files["products"][["sku", "category", "return_window_days"]]
    sales = files["order_lines"].merge(files["orders"][["order_id", "placed_at", "channel"]], on="order_id")
    sales = sales.merge(products, on="sku")
    sales = sales[sales["placed_at"] <= as_of].copy()
    sales["value"] = sales["quantity"] * sales["unit_price"] - sales["discount"]
    closes = sales["placed_at"] + pd.to_timedelta(sales["return_window_days"] + GRACE_DAYS, unit="D")
    sales["mature"] = closes <= as_of
    sales["month"] = sales["placed_at"].dt.strftime("%Y-%m")
    returns = files["returns"]
    returns = returns[(returns["status"] != "rejected") & (returns["requested_at"] <= as_of)]
    back = files["return_lines"].merge(returns[["return_id", "order_id"]], on="return_id")
    back = back.dropna(subset=["order_id", "order_line_no"])
    back = back.merge(
        sales[["order_id", "line_no", "category", "channel", "mature", "month"]],
        left_on=["order_id", "order_line_no"],
        right_on=["order_id", "line_no"],
    )
    return sales, back


@pytest.mark.parametrize(
    "dimension,values", [("category", ["apparel", "electronics", "home"]), ("channel", ["web", "store"])]
)
def test_rates_agree_with_a_direct_count_from_the_files(
    inputs: AnalyticsInputs, files: dict[str, pd.DataFrame], dimension: str, values: list[str]
) -> None:
    rates = analytics.return_rates(inputs, dimension, "month", RATES_AS_OF, grace_days=GRACE_DAYS)
    assert (rates["as_of"] == RATES_AS_OF).all()
    sales, back = _independent_sales(files, RATES_AS_OF)
    rates = rates.set_index(["dimension_value", "period", "mature"])
    for value in values:
        for period in ("all", "2024-03", "2024-09"):
            for mature in (True, False):
                chosen = (sales[dimension] == value) & (sales["mature"] == mature)
                came_back = (back[dimension] == value) & (back["mature"] == mature)
                if period != "all":
                    chosen &= sales["month"] == period
                    came_back &= back["month"] == period
                if not chosen.any():
                    assert (value, period, mature) not in rates.index
                    continue
                row = rates.loc[(value, period, mature)]
                assert row["units_sold"] == sales.loc[chosen, "quantity"].sum()
                assert row["units_returned"] == back.loc[came_back, "quantity"].sum()
                assert row["value_sold"] == pytest.approx(sales.loc[chosen, "value"].sum())
                assert row["value_refunded"] == pytest.approx(back.loc[came_back, "refund_amount"].sum())
                assert row["return_rate_units"] == pytest.approx(
                    back.loc[came_back, "quantity"].sum() / sales.loc[chosen, "quantity"].sum()
                )
    # March sales are all mature on 1 October; September sales only where the window is short
    assert rates.xs("2024-03", level="period").index.get_level_values("mature").all()
    if dimension == "category":
        assert ("apparel", "2024-09", True) not in rates.index  # 30 days + grace
        assert ("electronics", "2024-09", True) in rates.index  # 14 days + grace


def test_reason_rates_add_up_to_the_total(tables: dict[str, pd.DataFrame]) -> None:
    rates = tables["analytics_return_rates"]
    reasons = rates[rates["dimension"] == "reason"].groupby(["period", "mature"])
    channels = rates[rates["dimension"] == "channel"].groupby(["period", "mature"])
    total = channels[["units_sold", "units_returned", "value_refunded"]].sum()
    by_reason = reasons[["units_returned", "value_refunded"]].sum()
    assert (reasons["units_sold"].first() == total["units_sold"]).all()
    assert (by_reason["units_returned"] == total["units_returned"]).all()
    assert np.allclose(by_reason["value_refunded"], total["value_refunded"])
    assert set(rates["dimension"]) == set(analytics.DIMENSIONS)


# --- operations -----------------------------------------------------------------------------------


def test_limbo_holds_received_undisposed_lines_with_their_age(
    tables: dict[str, pd.DataFrame], files: dict[str, pd.DataFrame], as_of: pd.Timestamp
) -> None:
    returns = files["returns"]
    waiting = returns[returns["status"].isin(["received", "inspected"])]
    lines = files["return_lines"].merge(waiting[["return_id", "location_id", "received_at"]], on="return_id")
    assert lines["disposition"].isna().all() and len(lines) > 50
    days = np.floor((as_of - lines["received_at"]).dt.total_seconds() / 86400)
    lines["bucket"] = np.select(
        [days <= 2, days <= 7, days <= 14, days <= 30], ["0-2", "3-7", "8-14", "15-30"], ">30"
    )
    expected = lines.groupby(["location_id", "bucket"])["quantity"].sum()
    limbo = tables["analytics_limbo"]
    got = limbo[limbo["units"] > 0].set_index(["location_id", "age_bucket"])["units"]
    pd.testing.assert_series_equal(
        got.sort_index(), expected.sort_index(), check_names=False, check_dtype=False, check_index_type=False
    )
    assert (limbo.groupby("location_id").size() == len(analytics.AGE_BUCKETS)).all()
    detail = tables["analytics_limbo_lines"].merge(lines, on=["return_id", "line_no"])
    assert len(detail) == len(lines)
    assert np.allclose(detail["age_days"], (as_of - detail["received_at_y"]).dt.total_seconds() / 86400)


def test_the_api_and_the_operations_page_hold_the_same_lines_in_limbo(
    simulated: Path, sqlite_template: Path, tmp_path: Path
) -> None:
    """Imported history (no received quantities, dispositions only for some) and lifecycle returns (one
    received and waiting, one received and disposed): `GET /v1/inventory/limbo` and the page agree."""
    import datetime as dt

    from oms.lifecycle import CreateReturn, LineRequest, ReturnService, limbo
    from oms.policy import load_policy
    from oms.settings import DEFAULT_POLICY_PATH
    from oms.uow import unit_of_work

    engine = _imported_engine(sqlite_template, tmp_path, simulated)
    orders = pd.read_csv(simulated / "orders.csv", parse_dates=["placed_at"])
    returned = set(pd.read_csv(simulated / "returns.csv")["order_id"].dropna())
    fresh = orders[orders["channel"] == "web"].sort_values("placed_at")
    fresh = fresh[~fresh["order_id"].isin(returned)]["order_id"].tail(2).tolist()
    now = orders["placed_at"].max().to_pydatetime() + dt.timedelta(days=2)
    with unit_of_work(engine) as session:
        service = ReturnService(session, load_policy(DEFAULT_POLICY_PATH), now=lambda: now)
        waiting, done = (
            service.create(
                CreateReturn(
                    channel="mail",
                    order_id=order_id,
                    location_id="RC1",
                    lines=(LineRequest(order_line_no=1, quantity=1, reason="doesnt_fit"),),
                ),
                "test",
            ).return_id
            for order_id in fresh
        )
        for return_id in (waiting, done):
            service.receive(return_id, "test")
        service.inspect(done, {1: "new"}, "test")
        service.dispose(done, "test")
    with unit_of_work(engine, write=False) as session:
        api = {(i.return_id, i.line_no, i.quantity) for i in limbo(session, now)}
    page = analytics.limbo_lines(analytics.load_inputs(engine), pd.Timestamp(now))
    engine.dispose()
    shown = set(zip(page["return_id"], page["line_no"], page["units"].astype(int), strict=True))
    assert api == shown
    assert len(api) > 20  # imported history holds lines in limbo too
    assert (waiting, 1, 1) in api and not any(r == done for r, _, _ in api)


def _lifecycle_inputs() -> AnalyticsInputs:
    """Returns at various stages, with the lifecycle's own columns (received_quantity, disposed_at, refunds)."""
    product = {
        "sku": "P1",
        "style_id": "P",
        "category": "home",
        "list_price": 50,
        "unit_cost": 20,
        "return_window_days": 30,
    }
    orders = [
        {"order_id": f"O{i}", "channel": "web", "location_id": "W", "placed_at": "2024-02-01T10:00Z"}
        for i in range(1, 10)
    ]
    lines = [
        {"order_id": f"O{i}", "line_no": 1, "sku": "P1", "quantity": 2, "unit_price": 50}
        for i in range(1, 10)
    ]

    def ret(i, requested, received, status, channel="store", location="S1"):
        return {
            "return_id": f"R{i}",
            "order_id": f"O{i}",
            "channel": channel,
            "location_id": location,
            "requested_at": requested,
            "received_at": received,
            "status": status,
        }

    def line(i, received_quantity, disposition=None, disposed_at=None, recovery=None, line_no=1):
        return {
            "return_id": f"R{i}",
            "line_no": line_no,
            "order_line_no": 1,
            "sku": "P1",
            "quantity": 2,
            "reason": "changed_mind",
            "refund_amount": 100,
            "received_quantity": received_quantity,
            "disposition": disposition,
            "disposed_at": disposed_at,
            "recovery_value": recovery,
        }

    returns = [
        ret(1, "2024-03-10T11:00Z", "2024-03-10T12:00Z", "received"),  # 21.0 days -> 15-30
        ret(2, "2024-03-28T13:00Z", "2024-03-28T13:00Z", "received"),  # 2.96 days -> 0-2
        ret(3, "2024-03-28T12:00Z", "2024-03-28T12:00Z", "inspected", "mail", "RC"),  # 3.0 days -> 3-7
        ret(4, "2024-02-28T12:00Z", "2024-02-28T12:00Z", "received", "mail", "RC"),  # 32 days -> >30
        ret(5, "2024-03-20T12:00Z", "2024-03-20T12:00Z", "completed"),  # disposed after as_of -> 8-14
        ret(6, "2024-03-14T12:00Z", "2024-03-15T12:00Z", "completed", "mail", "RC"),  # disposed before
        ret(7, "2024-03-01T00:00Z", "2024-03-01T00:00Z", "received"),  # 30.5 days -> 15-30
        ret(8, "2024-03-20T12:00Z", None, "cancelled"),
        ret(
            9, "2024-03-05T12:00Z", "2024-03-05T12:00Z", "completed", "mail", "RC"
        ),  # imported: no disposed_at
    ]
    return_lines = [
        line(1, 2),
        line(2, 1),
        line(3, 2),
        line(4, 2),
        line(5, 2, "restock", "2024-04-02T00:00Z", 60),
        line(6, 1, "restock", "2024-03-20T12:00Z", 35),
        line(6, 0, line_no=2),  # nothing of it arrived
        line(7, 2),
        line(8, None),
        line(9, None, "liquidate", None, 12),
    ]
    refunds = [{"return_id": "R6", "created_at": "2024-03-16T12:00Z", "amount": 50}]
    locations = [
        {"location_id": "S1", "kind": "store", "name": "Store 1"},
        {"location_id": "RC", "kind": "returns_center", "name": "Returns centre"},
    ]
    return _inputs(
        products=[product],
        locations=locations,
        orders=orders,
        order_lines=lines,
        returns=returns,
        return_lines=return_lines,
        refunds=refunds,
    )


def test_limbo_is_point_in_time_with_lifecycle_columns() -> None:
    inputs = _lifecycle_inputs()
    as_of = pd.Timestamp("2024-03-31T12:00Z")
    lines = analytics.limbo_lines(inputs, as_of).set_index("return_id")
    assert sorted(lines.index) == ["R1", "R2", "R3", "R4", "R5", "R7"]
    assert lines["age_bucket"].to_dict() == {
        "R1": "15-30",
        "R2": "0-2",
        "R3": "3-7",
        "R4": ">30",
        "R5": "8-14",
        "R7": "15-30",
    }
    assert lines.loc["R2", "units"] == 1 and lines.loc["R1", "units"] == 2
    assert lines.loc["R4", "age_days"] == pytest.approx(32.0)
    ageing = analytics.limbo_ageing(inputs, as_of).set_index(["location_id", "age_bucket"])
    assert ageing.loc[("S1", "15-30"), "units"] == 4 and ageing.loc[("S1", "15-30"), "lines"] == 2
    assert ageing.loc[("RC", ">30"), "units"] == 2 and ageing.loc[("RC", "0-2"), "units"] == 0
    assert ageing.loc[("S1", "0-2"), "location_kind"] == "store"
    assert ageing.loc[("S1", "15-30"), "oldest_age_days"] == pytest.approx(30.5)
    # once R5 has been disposed of, it has left limbo and shows in the disposition mix
    later = analytics.limbo_lines(inputs, "2024-04-03T00:00Z")
    assert "R5" not in set(later["return_id"])
    mix = analytics.disposition_mix(inputs, as_of)
    overall = mix[mix["period"] == "all"].set_index("disposition")
    assert overall.loc["restock", "units"] == 1 and overall.loc["liquidate", "units"] == 2
    assert overall.loc["restock", "recovered_value"] == pytest.approx(35)
    assert overall.loc["restock", "value_refunded"] == pytest.approx(50)  # 1 of the 2 units arrived
    assert overall.loc["restock", "recovery_rate"] == pytest.approx(35 / 50)
    mix_later = analytics.disposition_mix(inputs, "2024-04-03T00:00Z")
    assert mix_later[mix_later["period"] == "all"]["units"].sum() == 5


def test_cycle_times_use_the_lifecycle_timestamps() -> None:
    cycle = analytics.cycle_times(_lifecycle_inputs(), "2024-03-31T12:00Z")
    overall = cycle[(cycle["channel"] == "all") & (cycle["period"] == "all")].set_index("stage")
    assert list(overall.index) == list(analytics.STAGES)
    assert overall.loc["receipt_to_disposition", "observations"] == 1
    assert overall.loc["receipt_to_disposition", "p50_days"] == pytest.approx(5.0)
    assert overall.loc["request_to_refund", "p50_days"] == pytest.approx(2.0)
    assert overall.loc["receipt_to_refund", "p50_days"] == pytest.approx(1.0)
    # eight received returns (the cancelled one never arrived): request -> receipt
    assert overall.loc["request_to_receipt", "observations"] == 8
    mail = cycle[(cycle["channel"] == "mail") & (cycle["period"] == "2024-03")].set_index("stage")
    assert mail.loc["request_to_receipt", "p50_days"] == pytest.approx(0.0)


def test_cycle_time_matches_numpy_percentiles(
    tables: dict[str, pd.DataFrame], files: dict[str, pd.DataFrame], inputs: AnalyticsInputs
) -> None:
    returns = files["returns"]
    received = returns[(returns["status"] != "rejected") & returns["received_at"].notna()]
    days = (received["received_at"] - received["requested_at"]).dt.total_seconds() / 86400
    cycle = tables["analytics_cycle_time"]
    row = cycle[
        (cycle["stage"] == "request_to_receipt") & (cycle["channel"] == "all") & (cycle["period"] == "all")
    ]
    assert row["observations"].item() == len(days)
    for q, column in ((0.5, "p50_days"), (0.9, "p90_days"), (0.95, "p95_days")):
        assert row[column].item() == pytest.approx(np.quantile(days, q), rel=1e-9)
    # the history carries refund and disposal times (optional contract columns): those stages too
    refunded = received[received["refunded_at"].notna()]
    assert len(refunded) > 100
    to_refund = (refunded["refunded_at"] - refunded["received_at"]).dt.total_seconds() / 86400
    row = cycle[
        (cycle["stage"] == "receipt_to_refund") & (cycle["channel"] == "all") & (cycle["period"] == "all")
    ]
    assert row["observations"].item() == len(to_refund)
    assert row["p90_days"].item() == pytest.approx(np.quantile(to_refund, 0.9), rel=1e-9)
    lines = files["return_lines"].merge(received[["return_id", "received_at"]], on="return_id")
    lines = lines[lines["disposed_at"].notna()]
    row = cycle[
        (cycle["stage"] == "receipt_to_disposition")
        & (cycle["channel"] == "all")
        & (cycle["period"] == "all")
    ]
    assert row["observations"].item() == len(lines) > 100

    # without those times (an export that lacks the columns) the stages are present and empty
    def never(frame: pd.DataFrame) -> pd.Series:
        return pd.Series(pd.NaT, index=frame.index, dtype="datetime64[us, UTC]")

    bare = dataclasses.replace(
        inputs,
        returns=inputs.returns.assign(refunded_at=never),
        return_lines=inputs.return_lines.assign(disposed_at=never),
    )
    empty = analytics.cycle_times(bare)
    empty = empty[(empty["channel"] == "all") & (empty["period"] == "all")].set_index("stage")
    assert empty.loc["receipt_to_disposition", "observations"] == 0
    assert empty.loc["receipt_to_refund", "observations"] == 0
    assert empty.loc["request_to_receipt", "observations"] == len(days)


def test_disposition_mix_sums_to_the_disposed_units(
    tables: dict[str, pd.DataFrame], files: dict[str, pd.DataFrame]
) -> None:
    returns = files["returns"]
    received = returns[(returns["status"] != "rejected") & returns["received_at"].notna()]
    lines = files["return_lines"].merge(received[["return_id"]], on="return_id")
    disposed = lines[lines["disposition"].notna()]
    mix = tables["analytics_dispositions"]
    overall = mix[mix["period"] == "all"]
    monthly = mix[mix["period"] != "all"]
    assert overall["units"].sum() == disposed["quantity"].sum() == monthly["units"].sum()
    by_disposition = overall.groupby("disposition")["units"].sum()
    pd.testing.assert_series_equal(
        by_disposition.sort_index(),
        disposed.groupby("disposition")["quantity"].sum().sort_index(),
        check_names=False,
        check_dtype=False,
        check_index_type=False,
    )
    assert overall["recovered_value"].sum() == pytest.approx(disposed["recovery_value"].sum())
    assert overall["value_refunded"].sum() == pytest.approx(disposed["refund_amount"].sum())
    assert analytics.UNRECORDED not in set(overall["disposition"])


def test_boris_share_equals_a_direct_count(
    tables: dict[str, pd.DataFrame], files: dict[str, pd.DataFrame]
) -> None:
    returns = files["returns"][files["returns"]["status"] != "rejected"]
    returns = returns.merge(
        files["orders"][["order_id", "channel"]].rename(columns={"channel": "order_channel"}),
        on="order_id",
        how="left",
    )
    online = returns["order_channel"].notna() & (returns["order_channel"] != "store")
    boris = online & (returns["channel"] == "store")
    table = tables["analytics_boris"].set_index(["period", "location_id"])
    total = table.loc[("all", "all")]
    assert total["returns"] == len(returns)
    assert total["boris_returns"] == boris.sum()
    assert total["online_order_returns"] == online.sum()
    assert total["boris_share_of_returns"] == pytest.approx(boris.mean())
    assert total["boris_share_of_online_returns"] == pytest.approx(boris.sum() / online.sum())
    month = returns["requested_at"].dt.strftime("%Y-%m")
    per_month = boris.groupby(month).sum()
    got = table.xs("all", level="location_id")["boris_returns"].drop("all")
    pd.testing.assert_series_equal(
        got.sort_index(), per_month.sort_index(), check_names=False, check_dtype=False, check_index_type=False
    )
    value = files["return_lines"].groupby("return_id")["refund_amount"].sum()
    boris_value = value.reindex(returns.loc[boris, "return_id"]).sum()
    assert total["boris_value"] == pytest.approx(boris_value)
    stores = table.drop(index="all", level="period").drop(index="all", level="location_id")
    assert stores["boris_returns"].sum() == boris.sum()


# --- the UCI file ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def uci_tables(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    if not UCI_FILE.is_file():
        pytest.skip(f"the UCI Online Retail file is not at {UCI_FILE} (set RECOUP_UCI_FILE)")
    directory = tmp_path_factory.mktemp("uci")
    convert_uci(UCI_FILE, directory / "contract")
    engine = _imported_engine(sqlite_template, directory, directory / "contract")
    try:
        return analytics.build_all(analytics.load_inputs(engine))
    finally:
        engine.dispose()


def test_uci_history_gives_rates_and_flags(uci_tables: dict[str, pd.DataFrame]) -> None:
    rates = uci_tables["analytics_return_rates"]
    overall = rates[rates["period"] == "all"]
    assert set(overall.loc[overall["dimension"] == "reason", "dimension_value"]) == {"other"}
    assert set(overall.loc[overall["dimension"] == "size", "dimension_value"]) == {analytics.MISSING}
    assert set(overall.loc[overall["dimension"] == "location_id", "dimension_value"]) == {"UK-WH"}
    mature = overall[(overall["dimension"] == "channel") & overall["mature"]]
    assert 0 < mature["return_rate_units"].item() < 0.2
    assert rates["return_rate_units"].dropna().between(0, 1).all()  # over-returns are capped
    items = uci_tables["analytics_abnormal_items"]
    assert items["flagged"].any()
    assert not (items["flagged"] & (items["units_sold"] < MIN_UNITS)).any()
    assert set(items["dominant_reason"].dropna()) == {"other"}
    assert items.loc[items["flagged"], "flag_reasons"].str.contains("overall|other").all()
    assert uci_tables["analytics_size_curve"].empty and uci_tables["analytics_fit_signals"].empty
    assert list(uci_tables["analytics_fit_signals"].columns) == list(
        analytics.TABLES["analytics_fit_signals"]
    )
    assert uci_tables["analytics_limbo"].empty  # every credit note is a completed return
    assert set(uci_tables["analytics_dispositions"]["disposition"]) == {analytics.UNRECORDED}
    boris = uci_tables["analytics_boris"]
    assert (boris["boris_returns"] == 0).all()


# --- the database: both backends ------------------------------------------------------------------


def test_load_inputs_gives_the_same_tables_on_each_backend(
    connection: Connection, simulated: Path, tables: dict[str, pd.DataFrame], as_of: pd.Timestamp
) -> None:
    import_directory(simulated, connection)
    inputs = analytics.load_inputs(connection)
    assert list(inputs.orders.columns) == list(analytics.INPUT_COLUMNS["orders"])
    rebuilt = analytics.build_all(inputs, as_of, min_units=MIN_UNITS, grace_days=GRACE_DAYS)
    assert list(rebuilt) == list(tables)
    for name, frame in tables.items():
        pd.testing.assert_frame_equal(rebuilt[name], frame, check_exact=False, rtol=1e-9, obj=name)


def test_write_all_then_read_back_gives_the_same_frames(
    connection: Connection, tables: dict[str, pd.DataFrame]
) -> None:
    analytics.write_all(connection, tables)
    for name, frame in tables.items():
        pd.testing.assert_frame_equal(analytics.read_table(connection, name), frame, obj=name)
    # writing again replaces (not appends), and an empty table keeps its columns
    smaller = {
        "analytics_limbo": tables["analytics_limbo"].head(3),
        "analytics_size_curve": tables["analytics_size_curve"].head(0),
    }
    analytics.write_all(connection, smaller)
    for name, frame in smaller.items():
        pd.testing.assert_frame_equal(analytics.read_table(connection, name), frame, obj=name)
    with pytest.raises(ValueError, match="orders"):
        analytics.write_all(connection, {"orders": tables["analytics_limbo"]})


def test_unknown_dimensions_and_periods_are_refused(inputs: AnalyticsInputs) -> None:
    with pytest.raises(ValueError, match="by must be one of"):
        analytics.return_rates(inputs, "colour")
    with pytest.raises(ValueError, match="period must be one of"):
        analytics.return_rates(inputs, "category", period="fortnight")
