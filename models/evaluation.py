"""How fraud models are judged: time-ordered splits with a label delay, metrics at review capacity,
calibration, and the legacy rules every model is compared with.

Follows the practice of the fraud-detection handbook (Le Borgne et al.): train on a period, skip the
label delay, test on the following period; rank by score and look at what the review team can actually
handle (a capacity, e.g. 2 % of returns), not at AUC alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

DAY = pd.Timedelta(days=1)


@dataclass(frozen=True)
class Split:
    """Train on returns requested before `train_end` with labels decided before `train_labels_until`;
    validate (early stopping, calibration) on [valid_start, valid_end); test on [test_start, test_end)."""

    train_end: pd.Timestamp
    train_labels_until: pd.Timestamp
    valid_start: pd.Timestamp
    valid_end: pd.Timestamp
    test_start: pd.Timestamp
    test_end: pd.Timestamp

    def describe(self) -> dict[str, str]:
        return {name: value.isoformat() for name, value in self.__dict__.items()}


def time_split(
    as_of: pd.Timestamp, *, test_days: int = 60, valid_days: int = 45, label_delay_days: int = 14
) -> Split:
    """The latest `test_days` whose labels had time to arrive are the test period; before it, a gap of
    the label delay, then the validation window, another gap, and everything earlier is training."""
    test_end = as_of - label_delay_days * DAY
    test_start = test_end - test_days * DAY
    valid_end = test_start - label_delay_days * DAY
    valid_start = valid_end - valid_days * DAY
    train_end = valid_start - label_delay_days * DAY
    return Split(
        train_end=train_end,
        train_labels_until=valid_start,
        valid_start=valid_start,
        valid_end=valid_end,
        test_start=test_start,
        test_end=test_end,
    )


def threshold_at_capacity(scores: np.ndarray, capacity: float) -> float:
    """The score above which `capacity` of all returns fall (the review queue's cut)."""
    if len(scores) == 0:
        return np.inf
    k = max(int(np.floor(capacity * len(scores))), 1)
    return float(np.sort(scores)[::-1][k - 1])


def capacity_metrics(
    scores: np.ndarray, labels: np.ndarray, values: np.ndarray, threshold: float
) -> dict[str, float]:
    """Precision, recall and share of fraud value caught among labelled returns scored >= threshold."""
    flagged = scores >= threshold
    positives = labels.astype(bool)
    caught = flagged & positives
    return {
        "precision_at_capacity": float(caught.sum() / flagged.sum()) if flagged.any() else float("nan"),
        "recall_at_capacity": float(caught.sum() / positives.sum()) if positives.any() else float("nan"),
        "value_caught_at_capacity": float(values[caught].sum() / values[positives].sum())
        if values[positives].sum() > 0
        else float("nan"),
        "flagged_labelled": float(flagged.sum()),
    }


def ranking_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    if len(np.unique(labels)) < 2:
        return {"average_precision": float("nan"), "roc_auc": float("nan")}
    return {
        "average_precision": float(average_precision_score(labels, scores)),
        "roc_auc": float(roc_auc_score(labels, scores)),
    }


def calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: |mean predicted - observed rate| weighted over equal-count bins."""
    if len(probabilities) == 0:
        return float("nan")
    order = np.argsort(probabilities)
    chunks = np.array_split(order, min(bins, len(order)))
    total = len(probabilities)
    return float(
        sum(len(c) / total * abs(probabilities[c].mean() - labels[c].mean()) for c in chunks if len(c))
    )


def calibration_curve(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> pd.DataFrame:
    order = np.argsort(probabilities)
    rows = [
        {"predicted": float(probabilities[c].mean()), "observed": float(labels[c].mean()), "count": len(c)}
        for c in np.array_split(order, min(bins, max(len(order), 1)))
        if len(c)
    ]
    return pd.DataFrame(rows)


# --- the legacy rules -----------------------------------------------------------------------------

LEGACY_RULES = {
    "receiptless_over_75": lambda f: (f["receiptless"] == 1) & (f["return_value"] >= 75),
    "frequent_returner": lambda f: f["cust_returns_30d"].fillna(0) >= 3,
    "high_value": lambda f: f["return_value"] >= 400,
    "cash_over_150": lambda f: (f["refund_cash"] == 1) & (f["return_value"] >= 150),
}


def legacy_rule_scores(features: pd.DataFrame) -> np.ndarray:
    """The rule set retailers typically run (and the simulated one used): rules hit, ties by value.

    A score, so it can be ranked and cut at the same capacity as a model.
    """
    hits = sum(rule(features).astype(float) for rule in LEGACY_RULES.values())
    tie_break = np.clip(features["return_value"].fillna(0).to_numpy(float), 0, 1e6) / 1e7
    return hits.to_numpy(float) + tie_break


def evaluate(
    name: str,
    scores: np.ndarray,
    holdout: pd.DataFrame,
    *,
    capacity: float,
    population_scores: np.ndarray,
    probabilities: np.ndarray | None = None,
) -> dict[str, float]:
    """Metrics of one scorer on the holdout: on all reviews, and on the random-audit reviews (unbiased).

    `holdout` has one row per labelled test return (`label`, `source`, `return_value`), `scores` aligned
    with it; `population_scores` are the scorer's scores of every test-period return, which fix the
    review-queue threshold at `capacity`.
    """
    threshold = threshold_at_capacity(population_scores, capacity)
    labels = holdout["label"].to_numpy(int)
    values = holdout["return_value"].fillna(0).to_numpy(float)
    out: dict[str, float] = {}
    for subset, mask in (
        ("reviews", np.ones(len(holdout), dtype=bool)),
        ("audit", (holdout["source"] == "random_audit").to_numpy()),
    ):
        metrics = ranking_metrics(scores[mask], labels[mask])
        metrics.update(capacity_metrics(scores[mask], labels[mask], values[mask], threshold))
        metrics["labelled"] = float(mask.sum())
        metrics["positives"] = float(labels[mask].sum())
        if probabilities is not None:
            metrics["calibration_error"] = calibration_error(probabilities[mask], labels[mask])
        out.update({f"{subset}_{key}": value for key, value in metrics.items()})
    out["threshold"] = threshold
    return {f"{name}_{key}": value for key, value in out.items()}
