"""Drift (PSI) and the policy backtest on hand-made inputs whose answers are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dashboards import monitoring
from dashboards.queries import SCORE_BINS


def test_psi_is_zero_for_the_same_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(size=20_000)
    assert monitoring.psi(reference, rng.normal(size=20_000)) < 0.01
    assert monitoring.psi(reference, rng.normal(loc=1.0, size=20_000)) > monitoring.PSI_MAJOR
    # missing values are a bin of their own: more of them is drift
    with_gaps = np.where(rng.random(20_000) < 0.3, np.nan, rng.normal(size=20_000))
    assert monitoring.psi(reference, with_gaps) > monitoring.PSI_MODERATE
    assert np.isnan(monitoring.psi(reference, np.array([])))
    assert monitoring.stability(0.05) == "stable" and monitoring.stability(0.3) == "shifted"


def test_feature_psi_ranks_the_shifted_feature_first() -> None:
    rng = np.random.default_rng(1)
    reference = pd.DataFrame(
        {"return_value": rng.gamma(2, 50, 5_000), "cust_returns_30d": rng.poisson(1, 5_000)}
    )
    recent = pd.DataFrame(
        {"return_value": rng.gamma(2, 80, 5_000), "cust_returns_30d": rng.poisson(1, 5_000)}
    )
    table = monitoring.feature_psi(reference, recent)
    assert list(table["feature"]) == ["return_value", "cust_returns_30d"]
    assert table.loc[0, "stability"] == "shifted" and table.loc[1, "stability"] == "stable"
    assert table.loc[0, "description"]


def bins_from(returns: pd.DataFrame) -> pd.DataFrame:
    """What queries.backtest_bins computes, from one row per return (score, value, review outcome)."""
    frame = returns.assign(
        bin=np.minimum((returns["score"] * SCORE_BINS).astype(int), SCORE_BINS - 1),
        reviewed=returns["outcome"].notna().astype(int),
        positive=returns["outcome"].isin(["fraud", "abuse"]).astype(int),
        audited=(returns["source"] == "random_audit").astype(int),
    )
    frame["audited_positive"] = frame["audited"] * frame["positive"]
    frame["positive_value"] = frame["value"] * frame["positive"]
    return frame.groupby("bin", as_index=False).agg(
        returns=("score", "size"),
        value=("value", "sum"),
        reviewed=("reviewed", "sum"),
        positive=("positive", "sum"),
        positive_value=("positive_value", "sum"),
        audited=("audited", "sum"),
        audited_positive=("audited_positive", "sum"),
        first_request=("requested_at", "min"),
        last_request=("requested_at", "max"),
    )


@pytest.fixture
def history() -> pd.DataFrame:
    start = pd.Timestamp("2024-01-01", tz="UTC")
    return pd.DataFrame(
        {
            "score": [0.95, 0.9, 0.8, 0.6, 0.55, 0.4, 0.3, 0.2, 0.1, 0.05],
            "value": [100.0, 200.0, 50.0, 10.0, 30.0, 40.0, 60.0, 20.0, 10.0, 5.0],
            "outcome": [
                "fraud",
                "abuse",
                "legitimate",
                None,
                "fraud",
                None,
                "legitimate",
                None,
                "fraud",
                None,
            ],
            "source": [
                "rule_flag",
                "random_audit",
                "random_audit",
                None,
                "rule_flag",
                None,
                "random_audit",
                None,
                "random_audit",
                None,
            ],
            "requested_at": [start + pd.Timedelta(days=7 * i) for i in range(10)],
        }
    )


def test_backtest_at_a_threshold(history: pd.DataFrame) -> None:
    result = monitoring.backtest(bins_from(history), 0.5, minutes_per_review=30)
    assert result.flagged == 5 and result.returns == 10 and result.flagged_share == 0.5
    assert result.flagged_value == pytest.approx(390.0)
    assert result.reviewed == 4 and result.reviewed_positive == 3 and result.precision_reviewed == 0.75
    assert result.audited == 2 and result.audited_positive == 1 and result.precision_audit == 0.5
    assert result.audit_recall == 0.5  # the audit's other positive scored 0.1
    assert result.value_caught == pytest.approx(330.0)
    assert result.value_caught_share == pytest.approx(330.0 / 340.0)
    assert result.analyst_hours == 2.5
    assert result.weeks == pytest.approx(9.0) and result.flagged_per_week == pytest.approx(5 / 9)
    # a threshold exactly on a score flags it
    assert monitoring.backtest(bins_from(history), 0.95, 30).flagged == 1


def test_capacity_threshold_and_curve_agree_with_the_backtest(history: pd.DataFrame) -> None:
    bins = bins_from(history)
    threshold = monitoring.threshold_for_capacity(bins, 0.3)
    assert threshold == pytest.approx(0.8)
    assert monitoring.backtest(bins, threshold, 10).flagged == 3
    assert monitoring.threshold_for_capacity(bins, 0.0) == pytest.approx(0.95)  # at least the top bin
    curve = monitoring.backtest_curve(bins, 10, step=0.05).set_index("threshold")
    for t in (0.1, 0.5, 0.85):
        expected = monitoring.backtest(bins, t, 10)
        row = curve.loc[round(t, 6)]
        assert row["flagged"] == expected.flagged
        assert row["precision_reviewed"] == pytest.approx(expected.precision_reviewed, nan_ok=True)
        assert row["value_caught_share"] == pytest.approx(expected.value_caught_share)


def test_wilson_interval() -> None:
    low, high = monitoring.wilson_interval(8, 10)
    assert 0.44 < low < 0.5 and 0.94 < high < 0.98
    assert all(np.isnan(monitoring.wilson_interval(0, 0)))
