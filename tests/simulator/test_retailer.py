"""The simulated retailer: deterministic, in the contract, with visible typologies and biased labels."""

from __future__ import annotations

import datetime as dt
import filecmp
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Connection, func, select

from oms import enums
from oms.importer import import_directory
from oms.tables import metadata
from simulator.retailer import SimulationConfig, simulate

CONFIG = SimulationConfig(customers=20_000, months=12, seed=7)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    out = tmp_path_factory.mktemp("sim") / "retailer"
    result = simulate(CONFIG, out)
    frames = {p.stem: pd.read_csv(p, dtype=str, keep_default_na=False) for p in out.glob("*.csv")}
    frames.update(
        {
            f"truth_{p.stem}": pd.read_csv(p, dtype=str, keep_default_na=False)
            for p in (out / "_truth").glob("*.csv")
        }
    )
    frames["_dir"] = out  # type: ignore[assignment]
    frames["_figures"] = result.figures  # type: ignore[assignment]
    return frames


def _returns(sim: dict) -> pd.DataFrame:
    returns = sim["returns"].merge(sim["truth_returns"], on="return_id")
    returns["requested"] = pd.to_datetime(returns["requested_at"], utc=True)
    return returns


def test_same_seed_same_retailer_other_seed_other(tmp_path: Path) -> None:
    small = SimulationConfig(customers=1_500, months=4, seed=3)
    simulate(small, tmp_path / "a")
    simulate(small, tmp_path / "b")
    simulate(SimulationConfig(customers=1_500, months=4, seed=4), tmp_path / "c")
    for directory in (tmp_path / "a", tmp_path / "a" / "_truth"):
        names = sorted(p.name for p in directory.glob("*.csv"))
        assert names
        _match, mismatch, errors = filecmp.cmpfiles(
            directory, str(directory).replace("/a", "/b"), names, shallow=False
        )
        assert mismatch == [] and errors == []
    assert not filecmp.cmp(tmp_path / "a" / "orders.csv", tmp_path / "c" / "orders.csv", shallow=False)


def test_output_imports_cleanly(sim: dict, connection: Connection) -> None:
    report = import_directory(sim["_dir"], connection)
    for name in (
        "customers",
        "orders",
        "order_lines",
        "payments",
        "returns",
        "return_lines",
        "fraud_reviews",
    ):
        count = connection.execute(select(func.count()).select_from(metadata.tables[name])).scalar_one()
        assert count == len(sim[name]), name
    assert report.rows == sum(
        len(sim[n])
        for n in (
            "customers",
            "locations",
            "products",
            "orders",
            "order_lines",
            "payments",
            "returns",
            "return_lines",
            "fraud_reviews",
        )
    )


def test_rates_within_configured_ranges(sim: dict) -> None:
    figures = sim["_figures"]
    assert 0.10 <= figures["return_rate_by_value"] <= 0.20
    assert figures["online_return_rate_by_value"] > 2 * figures["store_return_rate_by_value"]
    assert 0.05 <= figures["fraud_abuse_share_of_returns"] <= 0.15
    # independently from the files: refunded value over sold value
    lines = sim["order_lines"]
    sold = (
        lines["unit_price"].astype(float) * lines["quantity"].astype(int) - lines["discount"].astype(float)
    ).sum()
    refunded = pd.to_numeric(sim["return_lines"]["refund_amount"], errors="coerce").sum()
    assert refunded / sold == pytest.approx(figures["return_rate_by_value"], rel=0.01)
    labels = sim["truth_returns"]["label"]
    assert (labels != "legitimate").mean() == pytest.approx(figures["fraud_abuse_share_of_returns"])


def test_every_typology_occurs(sim: dict) -> None:
    counts = sim["truth_returns"]["typology"].value_counts()
    for typology in (t for t in enums.FRAUD_TYPES if t != "other"):
        assert counts.get(typology, 0) >= 10, (typology, counts.to_dict())


def test_ring_members_share_cards_devices_or_addresses(sim: dict) -> None:
    truth = sim["truth_customers"]
    rings = truth[truth["ring_id"].astype(int) >= 0]
    assert rings["ring_id"].nunique() >= 3
    orders = sim["orders"].merge(sim["payments"][["order_id", "card_fingerprint"]], on="order_id")
    orders = orders.merge(rings, on="customer_id")
    for ring_id, members in orders.groupby("ring_id"):
        shared = False
        for column in ("card_fingerprint", "device_id", "ship_postcode"):
            used = members[members[column] != ""].groupby(column)["customer_id"].nunique()
            shared |= bool((used >= 2).any())
        if members["customer_id"].nunique() >= 2:
            assert shared, f"ring {ring_id} shares nothing"
    # and ordinary customers almost never share a card
    others = sim["payments"].merge(sim["orders"][["order_id", "customer_id"]], on="order_id")
    others = others[
        ~others["customer_id"].isin(rings["customer_id"])
        & (others["card_fingerprint"] != "")
        & (others["customer_id"] != "")
    ]
    per_card = others.groupby("card_fingerprint")["customer_id"].nunique()
    assert (per_card > 1).mean() < 0.001


def test_sweethearting_concentrates_on_few_employees_and_cash_or_credit(sim: dict) -> None:
    returns = _returns(sim)
    sweethearts = set(sim["truth_employees"].query("sweetheart == 'true'")["employee_id"])
    sweet = returns[returns["typology"] == "sweethearting"]
    assert len(sweet) >= 20
    assert sweet["employee_id"].isin(sweethearts).mean() > 0.95
    assert sweet["refund_method"].isin(["cash", "store_credit"]).mean() > 0.95
    store = returns[returns["channel"] == "store"]
    by_employee = store.groupby(store["employee_id"].isin(sweethearts))["refund_method"].apply(
        lambda m: m.isin(["cash", "store_credit"]).mean()
    )
    assert by_employee[True] > 3 * by_employee[False]


def test_wardrobed_items_come_back_used_just_inside_the_window(sim: dict) -> None:
    returns = _returns(sim)
    lines = sim["return_lines"].merge(returns[["return_id", "order_id", "requested"]], on="return_id")
    truth = sim["truth_return_lines"][["return_id", "line_no", "typology"]]
    lines = lines.merge(truth, on=["return_id", "line_no"])
    lines = lines[lines["typology"] == "wardrobing"]
    lines = lines.merge(sim["orders"][["order_id", "placed_at"]], on="order_id")
    lines = lines.merge(sim["products"][["sku", "return_window_days"]], on="sku")
    days = (lines["requested"] - pd.to_datetime(lines["placed_at"], utc=True)).dt.total_seconds() / 86400
    window = lines["return_window_days"].astype(int)
    inside_last_days = (days <= window) & (days >= window - 3.5)
    assert inside_last_days.mean() > 0.8
    inspected = lines[lines["condition"] != ""]
    assert inspected["condition"].isin(["used", "open_box"]).all(), inspected["condition"].value_counts()
    assert (inspected["condition"] == "used").mean() > 0.6


def test_empty_boxes_and_switched_items_are_found_at_inspection(sim: dict) -> None:
    lines = sim["return_lines"].merge(
        sim["truth_return_lines"][["return_id", "line_no", "typology"]], on=["return_id", "line_no"]
    )
    inspected = lines[lines["condition"] != ""]
    empty = inspected[inspected["typology"] == "empty_box"]
    switched = inspected[inspected["typology"] == "item_switching"]
    assert len(empty) >= 5 and (empty["condition"] == "empty_box").all()
    assert len(switched) >= 5 and (switched["condition"] == "wrong_item").all()
    legit = inspected[inspected["typology"] == "none"]
    assert not legit["condition"].isin(["empty_box", "wrong_item"]).any()


def test_receiptless_stolen_goods_hit_several_stores(sim: dict) -> None:
    returns = _returns(sim)
    stolen = returns[returns["typology"] == "receiptless_stolen"]
    assert (stolen["order_id"] == "").all() and (stolen["channel"] == "store").all()
    with_account = stolen[stolen["customer_id"] != ""]
    stores = with_account.groupby("customer_id")["location_id"].nunique()
    assert (stores >= 2).mean() > 0.6
    value = (
        sim["return_lines"]
        .assign(v=lambda f: pd.to_numeric(f["refund_amount"], errors="coerce"))
        .groupby("return_id")["v"]
        .sum()
    )
    legit_receiptless = returns[(returns["order_id"] == "") & (returns["typology"] == "none")]
    assert (
        value.reindex(stolen["return_id"]).median()
        > 2 * value.reindex(legit_receiptless["return_id"]).median()
    )


def test_reviews_are_a_biased_sample_except_the_audit(sim: dict) -> None:
    reviews = sim["fraud_reviews"].merge(sim["truth_returns"], on="return_id")
    flagged = reviews[reviews["source"] == "rule_flag"]
    audit = reviews[reviews["source"] == "random_audit"]
    population = sim["truth_returns"]["label"] != "legitimate"
    assert len(audit) >= 100
    flagged_rate = (flagged["label"] != "legitimate").mean()
    audit_rate = (audit["label"] != "legitimate").mean()
    assert flagged_rate > 2 * population.mean()
    # the audit is random: its fraud rate is the population's, within sampling error
    se = np.sqrt(population.mean() * (1 - population.mean()) / len(audit))
    assert abs(audit_rate - population.mean()) < 4 * se
    assert len(sim["fraud_reviews"]["return_id"].unique()) < 0.15 * len(sim["returns"])


def test_reviews_arrive_days_later_with_some_analyst_error(sim: dict) -> None:
    reviews = sim["fraud_reviews"].merge(_returns(sim)[["return_id", "requested", "label"]], on="return_id")
    delay = (
        pd.to_datetime(reviews["reviewed_at"], utc=True) - reviews["requested"]
    ).dt.total_seconds() / 86400
    assert (delay >= 1).all() and delay.median() > 3
    end = pd.Timestamp(CONFIG.end.isoformat(), tz="UTC")
    assert (pd.to_datetime(reviews["reviewed_at"], utc=True) < end).all()
    wrong = (reviews["outcome"] == "legitimate") != (reviews["label"] == "legitimate")
    assert 0.0 < wrong.mean() < 0.15


def test_disposition_values_and_truth_agree(sim: dict) -> None:
    truth = sim["truth_return_line_values"]
    lines = sim["return_lines"]
    disposed = lines[lines["disposition"] != ""]
    chosen = disposed.merge(truth, on=["return_id", "line_no", "disposition"])
    assert len(chosen) == len(disposed)
    assert (chosen["feasible"] == "true").all()
    assert (chosen["recovery_value"].astype(float) == chosen["net_value"].astype(float)).all()
    empty = truth[truth["condition"] == "empty_box"]
    assert set(empty.loc[empty["feasible"] == "true", "disposition"]) == {"recycle"}
    damaged = truth[truth["condition"] == "damaged"]
    assert not (damaged.loc[damaged["disposition"] == "restock", "feasible"] == "true").any()
    # routing is mostly the static table, with some exploration so other outcomes are observed
    static = disposed.merge(
        sim["truth_return_line_values"].drop_duplicates(["return_id", "line_no"])[
            ["return_id", "line_no", "condition"]
        ],
        on=["return_id", "line_no"],
    )
    follows = (
        static["condition_x"].map(
            {
                "new": "restock",
                "open_box": "open_box",
                "used": "liquidate",
                "damaged": "liquidate",
                "defective": "return_to_vendor",
                "wrong_item": "liquidate",
                "empty_box": "recycle",
            }
        )
        == static["disposition"]
    ).mean()
    assert 0.7 < follows < 0.95


def test_history_is_time_consistent(sim: dict) -> None:
    returns = _returns(sim)
    linked = returns[returns["order_id"] != ""].merge(sim["orders"][["order_id", "placed_at"]], on="order_id")
    assert (linked["requested"] > pd.to_datetime(linked["placed_at"], utc=True)).all()
    end = pd.Timestamp(CONFIG.end.isoformat(), tz="UTC")
    assert (returns["requested"] < end).all()
    assert (pd.to_datetime(sim["orders"]["placed_at"], utc=True) < end).all()
    start = pd.Timestamp(dt.datetime.combine(CONFIG.start, dt.time()), tz="UTC")
    assert (pd.to_datetime(sim["orders"]["placed_at"], utc=True) >= start).all()
    january = returns["requested"].dt.month == 1
    december_orders = pd.to_datetime(sim["orders"]["placed_at"], utc=True).dt.month == 12
    assert december_orders.mean() > 1.2 / 12  # holiday peak
    assert january.sum() > 0


def test_labels_as_a_retailer_has_them_budget_audit_share_and_delay(tmp_path: Path) -> None:
    """The review budget is what is known at the end, audit_share of it the random audit, and
    nothing decided in the last label_delay_days is known yet."""
    config = SimulationConfig(
        customers=3_000, months=8, seed=5, review_budget=120, audit_share=0.3, label_delay_days=60
    )
    simulate(config, tmp_path / "r")
    reviews = pd.read_csv(tmp_path / "r" / "fraud_reviews.csv")
    decided = pd.to_datetime(reviews["reviewed_at"], utc=True)
    known_by = pd.Timestamp(config.end.isoformat(), tz="UTC") - pd.Timedelta(days=60)
    assert (decided < known_by).all()
    lp = reviews[reviews["source"] != "chargeback"]
    assert len(lp) == 120
    assert (lp["source"] == "random_audit").sum() == 36
    returns = pd.read_csv(tmp_path / "r" / "returns.csv")
    late = pd.to_datetime(returns["requested_at"], utc=True) >= known_by
    assert late.sum() > 0 and not set(returns.loc[late, "return_id"]) & set(reviews["return_id"])


def test_typology_seeds_draw_other_fraud_mixes(tmp_path: Path) -> None:
    base = SimulationConfig(customers=3_000, months=6, seed=5)
    mixes = [base.with_typologies(seed) for seed in (1, 2)]
    assert mixes[0] != mixes[1] and mixes[0] == base.with_typologies(1)
    shares = []
    for number, config in enumerate(mixes):
        simulate(config, tmp_path / str(number))
        truth = pd.read_csv(tmp_path / str(number) / "_truth" / "returns.csv")
        shares.append(truth["typology"].value_counts(normalize=True))
    assert not shares[0].round(3).equals(shares[1].round(3))


def test_a_history_may_start_on_any_day_of_the_month() -> None:
    import datetime as dt

    from simulator.retailer import SimulationConfig

    assert SimulationConfig(start=dt.date(2026, 5, 31), months=1).end == dt.date(2026, 6, 30)
    assert SimulationConfig(start=dt.date(2023, 11, 30), months=3).end == dt.date(2024, 2, 29)
    assert SimulationConfig(start=dt.date(2024, 1, 15), months=12).end == dt.date(2025, 1, 15)
