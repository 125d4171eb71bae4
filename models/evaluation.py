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
    validate (early stopping) on [valid_start, valid_end); test on [test_start, test_end). Returns
    requested at or after `test_end` are too recent for their labels to have arrived: they are scored,
    never trained or judged on."""

    train_end: pd.Timestamp
    train_labels_until: pd.Timestamp
    valid_start: pd.Timestamp
    valid_end: pd.Timestamp
    test_start: pd.Timestamp
    test_end: pd.Timestamp
    label_horizon: pd.Timestamp | None = None  # the latest review decision known
    label_delay_days: float | None = None  # the observed delay from return to decision (90th percentile)

    def describe(self) -> dict[str, str]:
        return {
            name: value.isoformat() if isinstance(value, pd.Timestamp) else f"{value:.1f}"
            for name, value in self.__dict__.items()
            if value is not None
        }


class NotEnoughLabels(ValueError):
    """Too few labelled returns for a time split: the message gives the counts per window."""


def time_split(
    as_of: pd.Timestamp, *, test_days: int = 60, valid_days: int = 45, label_delay_days: int = 14
) -> Split:
    """A calendar split (benchmarks and fixed windows): the latest `test_days` whose labels had time to
    arrive are the test period; before it, a gap of the label delay, the validation window, another
    gap, and everything earlier is training."""
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


MIN_DELAY_DAYS = 3.0
MAX_DELAY_DAYS = 180.0
TEST_SHARE = 0.3  # of the mature labels, the latest ones
MIN_TEST, MIN_TEST_CLASS = 20, 3  # labelled test returns, and of each class
MIN_TRAIN, MIN_TRAIN_CLASS = 30, 5


def label_split(
    features: pd.DataFrame,
    reviews: pd.DataFrame,
    positive: tuple[str, ...],
    *,
    test_share: float = TEST_SHARE,
) -> Split:
    """A split anchored on the labels, not on the latest return.

    The label horizon is the latest review decision; the label delay is the 90th percentile of the
    time from a return to its decision. Returns requested later than horizon - delay are immature (most
    of their labels have not arrived): they are scored, not trained or judged on. Of the mature labelled
    returns, the latest `test_share` (by request time) are the test window and the rest train, so the
    windows hold labels whatever the calendar looks like. Raises `NotEnoughLabels`, with the counts per
    window, when either window lacks returns of a class.
    """
    decided = reviews[reviews["source"] != "chargeback"]
    requested = features.set_index("return_id")["requested_at"]
    if decided.empty:
        raise NotEnoughLabels("not enough labels to train a fraud model: no reviewed return yet")
    horizon = pd.Timestamp(decided["reviewed_at"].max())
    lag = (decided["reviewed_at"] - decided["return_id"].map(requested)).dropna() / DAY
    delay = float(np.clip(lag.quantile(0.9) if len(lag) else MIN_DELAY_DAYS, MIN_DELAY_DAYS, MAX_DELAY_DAYS))
    mature_end = horizon - pd.Timedelta(days=delay)
    known = reviews[reviews["reviewed_at"] <= horizon].sort_values("reviewed_at", kind="stable")
    last = known.groupby("return_id", sort=False).tail(1)
    labelled = pd.DataFrame(
        {
            "requested_at": last["return_id"].map(requested).to_numpy(),
            "label": last["outcome"].isin(positive).to_numpy(int),
            "judged": (last["source"] != "chargeback").to_numpy(),
        }
    ).dropna(subset=["requested_at"])
    labelled = labelled[labelled["requested_at"] < mature_end].sort_values("requested_at", kind="stable")
    judged = labelled[labelled["judged"]]
    cut = int(len(judged) * (1 - test_share))
    test_start = pd.Timestamp(judged["requested_at"].iloc[cut]) if 0 < cut < len(judged) else mature_end
    train = labelled[labelled["requested_at"] < test_start]
    test = judged[judged["requested_at"] >= test_start]

    def counts(frame: pd.DataFrame) -> str:
        return (
            f"{len(frame)} ({int(frame['label'].sum())} positive, {int((1 - frame['label']).sum())} negative)"
        )

    pos_train, neg_train = int(train["label"].sum()), int((1 - train["label"]).sum())
    pos_test, neg_test = int(test["label"].sum()), int((1 - test["label"]).sum())
    if (
        len(train) < MIN_TRAIN
        or min(pos_train, neg_train) < MIN_TRAIN_CLASS
        or len(test) < MIN_TEST
        or min(pos_test, neg_test) < MIN_TEST_CLASS
    ):
        raise NotEnoughLabels(
            f"not enough labels to train a fraud model: training {counts(train)}, test {counts(test)} "
            f"labelled returns before {mature_end:%Y-%m-%d} (labels known to {horizon:%Y-%m-%d}, "
            f"{delay:.0f} days after the return at the 90th percentile); a model needs {MIN_TRAIN} "
            f"({MIN_TRAIN_CLASS} of each class) and {MIN_TEST} ({MIN_TEST_CLASS} of each class)"
        )
    return Split(
        train_end=test_start,
        train_labels_until=horizon + pd.Timedelta(seconds=1),
        valid_start=test_start,
        valid_end=test_start,
        test_start=test_start,
        test_end=mature_end,
        label_horizon=horizon,
        label_delay_days=delay,
    )


def threshold_at_capacity(scores: np.ndarray, capacity: float) -> float:
    """The score above which `capacity` of all returns fall (the review queue's cut)."""
    if len(scores) == 0:
        return np.inf
    k = max(int(np.floor(capacity * len(scores))), 1)
    return float(np.sort(scores)[::-1][k - 1])


QUANTILES = 1001  # a scorer keeps its scores' distribution on recent returns at this resolution


def level_shift(logits: np.ndarray, rate: float) -> float:
    """The shift of `logits` whose mean sigmoid is `rate` (bisection: the mean grows with the shift)."""
    low, high = -30.0, 30.0
    for _ in range(80):
        middle = (low + high) / 2
        if np.mean(1.0 / (1.0 + np.exp(-(logits + middle)))) < rate:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def score_distribution(scores: np.ndarray) -> np.ndarray:
    """The distribution of a scorer's scores (0 %, 0.1 %, ..., 100 % quantiles), kept with it."""
    if len(scores) == 0:
        return np.zeros(0)
    return np.quantile(np.asarray(scores, dtype=float), np.linspace(0.0, 1.0, QUANTILES))


def review_cut(
    quantiles: np.ndarray, capacity: float, review_threshold: float, deny_threshold: float
) -> float:
    """The score from which a return is held for review: the policy's review threshold, raised until
    the returns between it and the deny threshold are at most `capacity` of all returns (by the scorer's
    distribution of scores on recent returns). A calibrated score says how likely fraud is; the team's
    capacity says how many it can look at: the queue keeps the likeliest that are not denied outright."""
    if len(quantiles) < 2:
        return review_threshold
    levels = np.linspace(0.0, 1.0, len(quantiles))
    below_deny = float(np.searchsorted(quantiles, deny_threshold, side="left")) / (len(quantiles) - 1)
    target = below_deny - capacity
    if target <= 0:
        return review_threshold
    return max(review_threshold, float(np.interp(target, levels, quantiles)))


def expected_queue(
    quantiles: np.ndarray, capacity: float, review_threshold: float, deny_threshold: float
) -> dict[str, float]:
    """From a scorer's distribution of scores: where its review queue starts, the share of returns it
    holds for review, the share the review threshold alone would hold, and the share denied."""
    cut = review_cut(quantiles, capacity, review_threshold, deny_threshold)
    if len(quantiles) < 2:
        return {"review_from": cut}
    levels = np.linspace(0.0, 1.0, len(quantiles))

    def below(score: float) -> float:
        return float(np.interp(score, quantiles, levels)) if score <= quantiles[-1] else 1.0

    return {
        "review_from": cut,
        "queue_share": max(below(deny_threshold) - below(cut), 0.0),
        "threshold_queue_share": max(below(deny_threshold) - below(review_threshold), 0.0),
        "deny_share": 1.0 - below(deny_threshold),
    }


def queue_metrics(
    scores: np.ndarray,
    days: float,
    *,
    capacity: float,
    review_threshold: float,
    deny_threshold: float,
    review_from: float,
) -> dict[str, float]:
    """What a scorer's decisions would ask of the team on `days` of returns: the review queue (held for
    review from `review_from`, below deny), what the review threshold alone would hold, the denials;
    as shares of returns and per day, and the queue against the capacity."""
    scores = np.asarray(scores, dtype=float)
    if len(scores) == 0:
        return {}
    per_day = len(scores) / max(days, 1.0)
    deny = scores >= deny_threshold
    queue = (scores >= review_from) & ~deny
    by_threshold = (scores >= review_threshold) & ~deny
    return {
        "returns_per_day": per_day,
        "review_from": float(review_from),
        "queue_share": float(queue.mean()),
        "queue_per_day": float(queue.mean() * per_day),
        "capacity_per_day": float(capacity * per_day),
        "queue_capacity_ratio": float(queue.mean() / capacity) if capacity else float("nan"),
        "threshold_queue_share": float(by_threshold.mean()),
        "deny_share": float(deny.mean()),
        "deny_per_day": float(deny.mean() * per_day),
    }


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

# each takes a frame or a mapping of numpy columns (the rules scorer's rows) and answers a boolean array
LEGACY_RULES = {
    "receiptless_over_75": lambda f: np.asarray((f["receiptless"] == 1) & (f["return_value"] >= 75)),
    "frequent_returner": lambda f: np.nan_to_num(np.asarray(f["cust_returns_30d"], dtype=float)) >= 3,
    "high_value": lambda f: np.asarray(f["return_value"] >= 400),
    "cash_over_150": lambda f: np.asarray((f["refund_cash"] == 1) & (f["return_value"] >= 150)),
}


def legacy_rule_scores(features: pd.DataFrame) -> np.ndarray:
    """The rule set retailers typically run (and the simulated one used): rules hit, ties by value.

    A score, so it can be ranked and cut at the same capacity as a model.
    """
    hits = sum(rule(features).astype(float) for rule in LEGACY_RULES.values())
    tie_break = np.clip(features["return_value"].fillna(0).to_numpy(float), 0, 1e6) / 1e7
    return hits + tie_break


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


# --- an unbiased comparison: the random audit and inverse-propensity-weighted reviews ---------------


def rule_strata(frame: pd.DataFrame) -> np.ndarray:
    """How the legacy rules chose reviews: the number of rules a return hits (0 = not flagged)."""
    return sum(rule(frame).astype(int) for rule in LEGACY_RULES.values())


def propensity_weights(holdout: pd.DataFrame, population: pd.DataFrame) -> np.ndarray:
    """1 / P(reviewed | stratum) for each labelled holdout return: the reviews re-weighted to stand for
    every return of the test window. A stratum is the number of legacy rules hit, the rules having
    chosen what was reviewed; the random audit samples the unflagged stratum. Used to compare rankings
    (the gate); calibration, which needs the level of the fraud rate, uses `population_rate`."""
    labelled = pd.Series(rule_strata(holdout)).value_counts()
    everyone = pd.Series(rule_strata(population)).value_counts()
    weight = (everyone / labelled).reindex(labelled.index).fillna(1.0)
    return pd.Series(rule_strata(holdout)).map(weight).to_numpy(float)


def selection_weights(holdout: pd.DataFrame, population: pd.DataFrame) -> np.ndarray:
    """1 / P(reviewed) for each labelled holdout return: the reviews re-weighted to stand for every return
    of the test window.

    Reviews come through two channels. *Chosen* ones (flagged by the retailer's rules or a model) stand
    for the flagged returns, each 1 / q, q being the share of flagged returns reviewed, estimated where
    the legacy rules reproduce the flags (strata >= 1: the number of rules a return hits). The *random
    audit* stands for the rest of its stratum: (returns in it - those the chosen reviews stand for) /
    audits. A retailer's rules are never exactly the legacy rules, so some chosen reviews land in
    stratum 0; weighted by the stratum's size, as if they were the audit, they would make its fraud rate
    that of the flags (measured: a calibrated mean score 2.7x the true fraud share on a simulated
    retailer). A stratum without audits weighs its reviews by its size."""
    strata = pd.Series(rule_strata(holdout), index=holdout.index)
    everyone = pd.Series(rule_strata(population)).value_counts()
    audit = (holdout["source"] == "random_audit").to_numpy()
    chosen_flagged = int(((strata >= 1).to_numpy() & ~audit).sum())
    flagged_population = int(everyone[everyone.index >= 1].sum())
    q = min(chosen_flagged / flagged_population, 1.0) if flagged_population and chosen_flagged else None
    weights = np.ones(len(holdout))
    for stratum, size in everyone.items():
        here = (strata == stratum).to_numpy()
        if not here.any():
            continue
        audits, chosen = here & audit, here & ~audit
        rest = size - chosen.sum() / q if q else 0.0
        if q and audits.any() and rest > audits.sum():
            weights[chosen] = 1.0 / q
            weights[audits] = rest / audits.sum()
        else:
            weights[here] = size / here.sum()
    return weights


def population_rate(labelled: pd.DataFrame, population: pd.DataFrame) -> float:
    """The fraud rate of every return of `population`, estimated from its reviewed returns (`labelled`,
    with `label` and `source`): each group of reviews of one stratum and channel stands for the returns
    `selection_weights` gives it, at its rate shrunk by a Jeffreys prior ((k + 1/2) / (n + 1)), so that a
    handful of audits with no fraud among them does not say that the unflagged returns hold none."""
    if len(labelled) == 0:
        return float("nan")
    weights = selection_weights(labelled, population)
    groups = pd.DataFrame(
        {
            "group": [
                f"{s}/{c == 'random_audit'}"
                for s, c in zip(rule_strata(labelled), labelled["source"], strict=True)
            ],
            "label": labelled["label"].to_numpy(int),
            "weight": weights,
        }
    ).groupby("group")
    represented = groups["weight"].sum()
    rate = (groups["label"].sum() + 0.5) / (groups["label"].count() + 1.0)
    return float((represented * rate).sum() / represented.sum())


def weighted_ap(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> float:
    if labels.min() == labels.max():
        return float("nan")
    return float(average_precision_score(labels, scores, sample_weight=weights))


GATE_LEVEL = 0.8  # two-sided: a lead is "with confidence" when 90 % of the resampled leads are above 0


def bootstrap_compare(
    labels: np.ndarray,
    strata: np.ndarray,
    weights: np.ndarray,
    scores: dict[str, np.ndarray],
    *,
    rounds: int = 400,
    level: float = GATE_LEVEL,
    seed: int = 0,
) -> dict[str, float]:
    """Weighted AP of each scorer with a `level` bootstrap interval, and of the first scorer's lead over
    each other one (paired: the same resampled returns for both). Resampled within strata, so the
    weights hold.

    Keys: `<name>_ipw_ap`, `<name>_ipw_ap_lo`, `<name>_ipw_ap_hi`, `<first>_minus_<other>_lo`, `_hi`."""
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(strata == s) for s in np.unique(strata)]
    names = list(scores)
    draws = {name: [] for name in names}
    for _ in range(rounds):
        pick = np.concatenate([rng.choice(g, len(g), replace=True) for g in groups])
        if labels[pick].min() == labels[pick].max():
            continue
        for name in names:
            draws[name].append(weighted_ap(labels[pick], scores[name][pick], weights[pick]))
    low, high = (1 - level) / 2, 1 - (1 - level) / 2
    out: dict[str, float] = {}
    for name in names:
        values = np.asarray(draws[name])
        out[f"{name}_ipw_ap"] = weighted_ap(labels, scores[name], weights)
        out[f"{name}_ipw_ap_lo"] = float(np.quantile(values, low)) if len(values) else float("nan")
        out[f"{name}_ipw_ap_hi"] = float(np.quantile(values, high)) if len(values) else float("nan")
    first = names[0]  # the challenger, against each of the others
    for other in names[1:]:
        diff = np.asarray(draws[first]) - np.asarray(draws[other])
        out[f"{first}_minus_{other}_lo"] = float(np.quantile(diff, low)) if len(diff) else float("nan")
        out[f"{first}_minus_{other}_hi"] = float(np.quantile(diff, high)) if len(diff) else float("nan")
    return out
