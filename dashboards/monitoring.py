"""Model monitoring and policy backtests as plain functions on frames (no Streamlit, no SQL).

- PSI (population stability index) of a feature or score between a reference sample (the training
  period) and a recent one, on the reference's deciles, missing values as their own bin.
- The policy backtest: given the per-score-bin history of `queries.backtest_bins`, what a review
  threshold (or a capacity) would have flagged, how precise it was on reviewed returns and on the
  random-audit sample, how much fraud value it caught and how many analyst hours it needed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from dashboards.queries import SCORE_BINS

PSI_MODERATE = 0.1
PSI_MAJOR = 0.25
EPSILON = 1e-4


def psi(reference: np.ndarray, recent: np.ndarray, bins: int = 10) -> float:
    """Population stability index of `recent` against `reference` (NaN: both samples empty)."""
    reference = np.asarray(reference, dtype="float64")
    recent = np.asarray(recent, dtype="float64")
    if len(reference) == 0 or len(recent) == 0:
        return float("nan")
    known = reference[~np.isnan(reference)]
    edges = np.unique(np.quantile(known, np.linspace(0, 1, bins + 1)[1:-1])) if len(known) else np.array([])

    def shares(values: np.ndarray) -> np.ndarray:
        missing = np.isnan(values)
        buckets = np.searchsorted(edges, values[~missing], side="right")
        counts = np.bincount(buckets, minlength=len(edges) + 1).astype("float64")
        return np.append(counts, missing.sum()) / len(values)

    expected = np.clip(shares(reference), EPSILON, None)
    actual = np.clip(shares(recent), EPSILON, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def stability(value: float) -> str:
    if math.isnan(value):
        return "no data"
    if value >= PSI_MAJOR:
        return "shifted"
    if value >= PSI_MODERATE:
        return "moderate"
    return "stable"


def feature_psi(reference: pd.DataFrame, recent: pd.DataFrame) -> pd.DataFrame:
    """PSI per fraud feature (catalogue order), with means and missing shares of both samples."""
    from features.catalogue import FRAUD_FEATURES_V1

    rows = []
    for feature in FRAUD_FEATURES_V1:
        if feature.name not in reference or feature.name not in recent:
            continue
        before = reference[feature.name].to_numpy(dtype="float64")
        after = recent[feature.name].to_numpy(dtype="float64")
        value = psi(before, after)
        rows.append(
            {
                "feature": feature.name,
                "psi": value,
                "stability": stability(value),
                "reference_mean": float(np.nanmean(before)) if np.isfinite(before).any() else np.nan,
                "recent_mean": float(np.nanmean(after)) if np.isfinite(after).any() else np.nan,
                "reference_missing": float(np.isnan(before).mean()) if len(before) else np.nan,
                "recent_missing": float(np.isnan(after).mean()) if len(after) else np.nan,
                "description": feature.description,
            }
        )
    frame = pd.DataFrame(rows)
    frame.attrs["reference_returns"] = len(reference)
    frame.attrs["recent_returns"] = len(recent)
    return frame.sort_values("psi", ascending=False, kind="stable").reset_index(drop=True) if rows else frame


def score_psi_by_month(histogram: pd.DataFrame, reference_months: list[str]) -> pd.DataFrame:
    """PSI of each month's score distribution (histogram: month, bin, returns) against the reference
    months pooled; histogram bins are the PSI bins."""
    if histogram.empty:
        return pd.DataFrame(columns=["month", "psi", "returns"])
    table = histogram.pivot_table(index="month", columns="bin", values="returns", aggfunc="sum", fill_value=0)
    reference = table.loc[table.index.isin(reference_months)].sum()
    if reference.sum() == 0:
        reference = table.iloc[: max(len(table) // 2, 1)].sum()
    expected = np.clip(reference.to_numpy(float) / reference.sum(), EPSILON, None)
    rows = []
    for month, counts in table.iterrows():
        total = counts.sum()
        actual = np.clip(counts.to_numpy(float) / total, EPSILON, None)
        rows.append(
            {
                "month": month,
                "psi": float(np.sum((actual - expected) * np.log(actual / expected))),
                "returns": int(total),
            }
        )
    return pd.DataFrame(rows)


# --- policy backtest ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backtest:
    threshold: float
    returns: int
    weeks: float
    flagged: int
    flagged_share: float
    flagged_value: float
    flagged_per_week: float
    reviewed: int
    reviewed_positive: int
    precision_reviewed: float
    audited: int
    audited_positive: int
    precision_audit: float
    audit_recall: float  # share of the audit's fraud/abuse the threshold would have flagged
    value_caught: float  # value of flagged returns confirmed fraud/abuse
    value_caught_share: float  # of all confirmed fraud/abuse value
    estimated_fraud_value: float  # flagged value x audit precision (what the unbiased sample suggests)
    analyst_hours: float
    analyst_hours_per_week: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else float("nan")


def threshold_for_capacity(bins: pd.DataFrame, capacity: float) -> float:
    """The lowest bin edge whose returns at or above it stay within `capacity` of all returns (at least
    the top bin): the review queue's cut at that capacity."""
    if bins.empty:
        return 1.0
    ordered = bins.sort_values("bin", ascending=False)
    within = ordered["returns"].cumsum() <= capacity * ordered["returns"].sum()
    kept = ordered[within.to_numpy()]
    lowest = int(kept["bin"].min()) if len(kept) else int(ordered["bin"].iloc[0])
    return lowest / SCORE_BINS


def backtest(bins: pd.DataFrame, threshold: float, minutes_per_review: float) -> Backtest:
    """What flagging every return scored >= `threshold` would have meant over the history in `bins`."""
    first = bins["first_request"].min() if len(bins) else pd.NaT
    last = bins["last_request"].max() if len(bins) else pd.NaT
    weeks = max((last - first) / pd.Timedelta(days=7), 1 / 7) if pd.notna(first) else float("nan")
    cut = math.ceil(threshold * SCORE_BINS - 1e-9)
    flagged = bins[bins["bin"] >= cut]
    totals = bins[["returns", "positive_value", "audited_positive"]].sum() if len(bins) else None
    n_flagged = int(flagged["returns"].sum())
    audited = int(flagged["audited"].sum())
    audited_positive = int(flagged["audited_positive"].sum())
    precision_audit = _ratio(audited_positive, audited)
    value = float(flagged["value"].sum())
    hours = n_flagged * minutes_per_review / 60
    return Backtest(
        threshold=threshold,
        returns=int(totals["returns"]) if totals is not None else 0,
        weeks=float(weeks),
        flagged=n_flagged,
        flagged_share=_ratio(n_flagged, totals["returns"]) if totals is not None else float("nan"),
        flagged_value=value,
        flagged_per_week=_ratio(n_flagged, weeks),
        reviewed=int(flagged["reviewed"].sum()),
        reviewed_positive=int(flagged["positive"].sum()),
        precision_reviewed=_ratio(flagged["positive"].sum(), flagged["reviewed"].sum()),
        audited=audited,
        audited_positive=audited_positive,
        precision_audit=precision_audit,
        audit_recall=_ratio(audited_positive, totals["audited_positive"])
        if totals is not None
        else float("nan"),
        value_caught=float(flagged["positive_value"].sum()),
        value_caught_share=_ratio(flagged["positive_value"].sum(), totals["positive_value"])
        if totals is not None
        else float("nan"),
        estimated_fraud_value=value * precision_audit if not math.isnan(precision_audit) else float("nan"),
        analyst_hours=hours,
        analyst_hours_per_week=_ratio(hours, weeks),
    )


def backtest_curve(bins: pd.DataFrame, minutes_per_review: float, step: float = 0.01) -> pd.DataFrame:
    """Flagged volume, precision and value caught at every threshold of a grid (the trade-off chart)."""
    thresholds = np.round(np.arange(step, 1.0, step), 6)
    columns = ["returns", "value", "reviewed", "positive", "positive_value", "audited", "audited_positive"]
    ordered = bins.sort_values("bin")
    # sums over the bins at or above each row's bin, plus a zero row for cuts above every bin
    above = np.vstack([ordered[columns].to_numpy(float)[::-1].cumsum(axis=0)[::-1], np.zeros(len(columns))])
    cuts = np.ceil(thresholds * SCORE_BINS - 1e-9)
    sums = pd.DataFrame(above[np.searchsorted(ordered["bin"].to_numpy(), cuts, side="left")], columns=columns)
    totals = ordered[columns].sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        return pd.DataFrame(
            {
                "threshold": thresholds,
                "flagged": sums["returns"],
                "flagged_share": sums["returns"] / totals["returns"] if totals["returns"] else np.nan,
                "precision_reviewed": sums["positive"] / sums["reviewed"].where(sums["reviewed"] > 0),
                "precision_audit": sums["audited_positive"] / sums["audited"].where(sums["audited"] > 0),
                "value_caught_share": sums["positive_value"] / totals["positive_value"]
                if totals["positive_value"]
                else np.nan,
                "analyst_hours": sums["returns"] * minutes_per_review / 60,
            }
        )


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion (NaN, NaN without trials)."""
    if trials <= 0:
        return float("nan"), float("nan")
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)
