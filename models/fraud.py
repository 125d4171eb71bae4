"""The fraud/abuse model: LightGBM on reviewed returns, calibrated, with reason codes.

Training data are the point-in-time features of returns (`features.offline.fraud_features`) joined with
loss-prevention reviews: only reviewed returns have a label, positives are the configured outcomes
(fraud and abuse by default). Scores are calibrated (isotonic on the validation window) so that the
policy's review and deny thresholds mean probabilities.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from features.catalogue import FEATURE_SETS, FRAUD_FEATURE_SET, FRAUD_FEATURES_V1, names
from models.evaluation import (
    MIN_TEST,
    MIN_TEST_CLASS,
    NotEnoughLabels,
    Split,
    bootstrap_compare,
    evaluate,
    label_split,
    legacy_rule_scores,
    level_shift,
    population_rate,
    propensity_weights,
    queue_metrics,
    review_cut,
    rule_strata,
    score_distribution,
)
from models.explain import typical_by_group
from models.native import RowPredictor
from oms import enums

POSITIVE = enums.FRAUD_OUTCOMES
SEED = 42

DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "metric": "average_precision",
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 20,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "seed": SEED,
    "deterministic": True,
    "force_row_wise": True,
    "num_threads": 2,
    "verbose": -1,
}
MAX_ROUNDS = 600
EARLY_STOPPING = 50


@dataclass
class FraudModel:
    """A trained booster plus what serving needs: feature order, calibration, typical values."""

    booster: lgb.Booster
    feature_set: str
    features: list[str]
    calibration_x: np.ndarray
    calibration_y: np.ndarray
    typical: dict[str, float]
    positive: tuple[str, ...] = POSITIVE
    version: str | None = None
    typical_by_group: dict[str, dict[str, float]] = field(default_factory=dict)  # see models.explain
    trained_until: pd.Timestamp | None = None  # it learned from returns requested before this
    score_quantiles: np.ndarray = field(default_factory=lambda: np.zeros(0))  # on recent returns

    def review_from(self, fraud: Any) -> float:
        """The score from which this model's returns are held for review under the policy's `fraud`
        settings (thresholds and review capacity): see `models.evaluation.review_cut`."""
        return review_cut(
            self.score_quantiles, fraud.review_capacity, fraud.review_threshold, fraud.deny_threshold
        )

    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        return frame[self.features].to_numpy(dtype=np.float64)

    def raw(self, matrix: np.ndarray) -> np.ndarray:
        """The booster's margin (log-odds before calibration)."""
        return self.booster.predict(matrix, raw_score=True, num_threads=1)

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        uncalibrated = 1.0 / (1.0 + np.exp(-raw))
        return np.interp(uncalibrated, self.calibration_x, self.calibration_y)

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        return self.calibrate(self.raw(matrix))

    def contributions(self, matrix: np.ndarray) -> np.ndarray:
        """Per-feature contributions to the margin, last column the base value (they sum to `raw`)."""
        return self.booster.predict(matrix, pred_contrib=True, num_threads=1)

    @functools.cached_property
    def rows(self) -> RowPredictor:
        """Single-row predictions for serving (LightGBM's fast C path; same values as `booster`)."""
        return RowPredictor(self.booster)

    def meta(self) -> dict[str, Any]:
        return {
            "feature_set": self.feature_set,
            "features": self.features,
            "calibration_x": self.calibration_x.tolist(),
            "calibration_y": self.calibration_y.tolist(),
            "typical": {k: (None if v is None or math.isnan(v) else v) for k, v in self.typical.items()},
            "positive": list(self.positive),
            "trained_until": self.trained_until.isoformat() if self.trained_until is not None else None,
            "score_quantiles": self.score_quantiles.tolist(),
            "typical_by_group": {
                group: {k: (None if v is None or math.isnan(v) else v) for k, v in medians.items()}
                for group, medians in self.typical_by_group.items()
            },
        }

    @classmethod
    def from_meta(cls, booster: lgb.Booster, meta: dict[str, Any], version: str | None = None) -> FraudModel:
        return cls(
            booster=booster,
            feature_set=meta["feature_set"],
            features=list(meta["features"]),
            calibration_x=np.asarray(meta["calibration_x"], dtype=float),
            calibration_y=np.asarray(meta["calibration_y"], dtype=float),
            typical={k: (np.nan if v is None else float(v)) for k, v in meta["typical"].items()},
            positive=tuple(meta.get("positive", POSITIVE)),
            version=version,
            trained_until=pd.Timestamp(meta["trained_until"]) if meta.get("trained_until") else None,
            score_quantiles=np.asarray(meta.get("score_quantiles", []), dtype=float),
            typical_by_group={
                group: {k: (np.nan if v is None else float(v)) for k, v in medians.items()}
                for group, medians in meta.get("typical_by_group", {}).items()
            },
        )


@dataclass
class TrainingResult:
    model: FraudModel
    split: Split
    metrics: dict[str, float]
    holdout: pd.DataFrame  # labelled test returns with model, rules (and champion) scores
    population: pd.DataFrame  # every test-period return with its scores
    params: dict[str, Any]
    rows: dict[str, int] = field(default_factory=dict)
    latest_training_label: pd.Timestamp | None = None  # the newest review the training rows learned from


def labels_as_of(
    reviews: pd.DataFrame, before: pd.Timestamp, positive: tuple[str, ...] = POSITIVE
) -> pd.DataFrame:
    """The latest review decided before `before` of each reviewed return: label, source, reviewed_at."""
    known = reviews[reviews["reviewed_at"] < before].sort_values(["return_id", "reviewed_at"], kind="stable")
    last = known.groupby("return_id", sort=False).tail(1)
    return pd.DataFrame(
        {
            "return_id": last["return_id"].to_numpy(),
            "label": last["outcome"].isin(positive).astype(int).to_numpy(),
            "source": last["source"].astype(object).to_numpy(),
            "reviewed_at": last["reviewed_at"].to_numpy(),
        }
    )


def regularised(labels: int) -> tuple[dict[str, Any], int | None]:
    """LightGBM settings for the number of labels: few labels get small trees, large leaves and a fixed,
    short number of rounds; from `EARLY_STOPPING_LABELS` on, the rounds are chosen by early stopping on
    the latest fifth of the training labels (None)."""
    if labels >= EARLY_STOPPING_LABELS:
        return {}, None
    small = {
        "num_leaves": 7 if labels >= 150 else 4,
        "min_data_in_leaf": int(np.clip(labels // 25, 5, 20)),
        "lambda_l2": 5.0,
        "feature_fraction": 0.7,
    }
    return small, fixed_rounds(labels)


def fixed_rounds(labels: int) -> int:
    return int(np.clip(labels // 2, 60, 200))


EARLY_STOPPING_LABELS = 400
RECENT = pd.Timedelta(days=120)  # the returns whose scores size the review queue
SCORE_FLOOR, SCORE_CEILING = 0.001, 0.999  # a calibrated score is never "impossible" nor "certain"


def _platt(
    margins: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    population: np.ndarray | None = None,
    rate: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Calibration: a logistic fit of the label on the booster's margin over the labelled test returns
    (re-weighted by inverse propensity); then, given the margins of every return of the window
    (`population`) and its estimated fraud rate (`rate`), its intercept shifted so that the mean
    probability over those returns is that rate, so that a score holds for every return and not only
    for the reviewed ones the rules chose (the shape from the reviews, the level from the whole
    window). The curve as (uncalibrated probability -> probability), clipped to
    [SCORE_FLOOR, SCORE_CEILING]."""
    grid = np.linspace(0.0, 1.0, 401)
    margins_grid = np.log(np.clip(grid, 1e-12, 1 - 1e-12) / np.clip(1 - grid, 1e-12, 1))
    if len(labels) == 0 or labels.min() == labels.max():
        level = (
            rate if rate is not None else (float(np.average(labels, weights=weights)) if len(labels) else 0.0)
        )
        return grid, np.full_like(grid, np.clip(level, SCORE_FLOOR, SCORE_CEILING))
    fit = LogisticRegression(C=1.0).fit(margins.reshape(-1, 1), labels, sample_weight=weights)
    slope, intercept = float(fit.coef_[0][0]), float(fit.intercept_[0])
    if population is not None and len(population) and rate is not None:
        intercept += level_shift(
            slope * population + intercept, float(np.clip(rate, SCORE_FLOOR, SCORE_CEILING))
        )
    curve = 1.0 / (1.0 + np.exp(-(slope * margins_grid + intercept)))
    return grid, np.clip(curve, SCORE_FLOOR, SCORE_CEILING)


def _window(features: pd.DataFrame, start: pd.Timestamp | None, end: pd.Timestamp) -> pd.DataFrame:
    requested = features["requested_at"]
    mask = requested < end if start is None else (requested >= start) & (requested < end)
    return features[mask]


def _fit(
    params: dict[str, Any],
    train: pd.DataFrame,
    valid: pd.DataFrame | None,
    feature_names: list[str],
    rounds: int | None,
) -> tuple[lgb.Booster, int]:
    """A booster on `train` and its rounds: a fixed number, or as many as early stopping on `valid` keeps."""

    def dataset(frame: pd.DataFrame, reference=None) -> lgb.Dataset:
        return lgb.Dataset(
            frame[feature_names].to_numpy(np.float64),
            label=frame["label"].to_numpy(),
            weight=frame["weight"].to_numpy(float) if "weight" in frame else None,
            feature_name=feature_names,
            free_raw_data=False,
            reference=reference,
        )

    if rounds is not None:
        return lgb.train(params, dataset(train), num_boost_round=rounds), rounds
    train_set = dataset(train)
    booster = lgb.train(
        params,
        train_set,
        num_boost_round=MAX_ROUNDS,
        valid_sets=[dataset(valid, train_set)],
        valid_names=["valid"],
        callbacks=[lgb.early_stopping(EARLY_STOPPING, verbose=False)],
    )
    return booster, max(booster.best_iteration, 1)


def _against_champion(
    holdout: pd.DataFrame, strata: np.ndarray, weights: np.ndarray, champion: FraudModel
) -> dict[str, float]:
    """Challenger against champion on the test returns the champion never learned from (it was refit on
    every label it had): `challenger_ipw_ap`, `champion_ipw_ap` with their intervals and
    `challenger_minus_champion_lo/_hi`; only `champion_unseen_labelled` when they are too few to judge."""
    unseen = (
        (holdout["requested_at"] >= champion.trained_until).to_numpy()
        if champion.trained_until is not None
        else np.ones(len(holdout), dtype=bool)
    )
    labels = holdout["label"].to_numpy(int)[unseen]
    out = {"champion_unseen_labelled": float(unseen.sum())}
    if len(labels) < MIN_TEST or min(int(labels.sum()), int((1 - labels).sum())) < MIN_TEST_CLASS:
        return out
    scores = {
        "challenger": holdout["model_score"].to_numpy()[unseen],
        "champion": holdout["champion_score"].to_numpy()[unseen],
    }
    out.update(bootstrap_compare(labels, strata[unseen], weights[unseen], scores))
    return out


def train_fraud(
    features: pd.DataFrame,
    reviews: pd.DataFrame,
    *,
    as_of: pd.Timestamp | None = None,
    split: Split | None = None,
    capacity: float = 0.02,
    positive: tuple[str, ...] = POSITIVE,
    params: dict[str, Any] | None = None,
    champion: FraudModel | None = None,
    feature_set: str = FRAUD_FEATURE_SET,
    refit: bool = True,
    review_threshold: float = 0.2,  # the shipped policy's (oms/policy.toml)
    deny_threshold: float = 0.9,
) -> TrainingResult:
    """Train, calibrate and evaluate a challenger against the legacy rules and the champion, if any.

    The split is anchored on the labels (`label_split`) unless one is given: the latest mature labelled
    returns are the test window, returns too recent for their labels are left out. Raises
    `NotEnoughLabels` (one line, with the counts) when the labels cannot fill a split.

    The figures are those of a booster trained before the test window; with `refit` (the default) the
    served booster is then trained again, with the same settings and rounds, on every mature label,
    the test window's too (measured: AP against the truth +0.06 on average over 15 simulated retailers,
    better in each), and keeps the calibration. `trained_until` says which returns it learned from, so
    that the next challenger is compared with it only on returns it never saw.
    """
    feature_names = names(FEATURE_SETS[feature_set])
    asked = dict(params or {})
    as_of = as_of or features["requested_at"].max() + pd.Timedelta(seconds=1)
    split = split or label_split(features, reviews, positive)
    labels = labels_as_of(reviews, split.train_labels_until, positive)
    # what the model may learn from: labels known when it would have been trained
    train = _window(features, None, split.train_end).merge(labels, on="return_id")
    population = _window(features, split.test_start, split.test_end).reset_index(drop=True)
    holdout = population.merge(labels_as_of(reviews, as_of, positive), on="return_id")
    if split.label_horizon is not None:  # the chargebacks were not chosen by rules nor audit: not judged on
        holdout = holdout[holdout["source"] != "chargeback"].reset_index(drop=True)
    if split.valid_end > split.valid_start:  # a calendar split: its validation window stops the rounds
        valid = _window(features, split.valid_start, split.valid_end).merge(
            labels_as_of(reviews, split.test_start, positive), on="return_id"
        )
    else:
        valid = None
    if train["label"].nunique() < 2 or (valid is not None and valid["label"].nunique() < 2):
        raise NotEnoughLabels(
            f"not enough labels to train a fraud model: {len(train)} in training ({int(train['label'].sum())} positive)"
            + (
                f", {len(valid)} in validation ({int(valid['label'].sum())} positive)"
                if valid is not None
                else ""
            )
        )
    small, rounds = regularised(len(train))
    params = {**DEFAULT_PARAMS, **small, **asked}
    if rounds is None:  # enough labels: early stopping on the latest fifth, then all of them for that long
        ordered = train.sort_values("requested_at", kind="stable")
        cut = int(len(ordered) * 0.8)
        fitted, inner = (ordered, valid) if valid is not None else (ordered.iloc[:cut], ordered.iloc[cut:])
        if inner["label"].nunique() < 2:
            rounds = fixed_rounds(len(train))
        else:
            _, rounds = _fit(params, fitted, inner, feature_names, None)
    booster, rounds = _fit(params, train, None, feature_names, rounds)
    typical = features[feature_names].median(numeric_only=True).to_dict()
    if len(holdout):
        strata = rule_strata(holdout)
        weights = propensity_weights(holdout, population)
        margins = booster.predict(holdout[feature_names].to_numpy(np.float64), raw_score=True)
        # the fraud rate of every return, from all the mature labels: each review standing for the
        # returns of its stratum and selection channel (more audits than the test window alone holds)
        mature = _window(features, None, split.test_end)
        known = mature.merge(labels_as_of(reviews, as_of, positive), on="return_id")
        rate = population_rate(known[known["source"] != "chargeback"], mature)
        calibration_x, calibration_y = _platt(
            margins,
            holdout["label"].to_numpy(int),
            weights,
            booster.predict(population[feature_names].to_numpy(np.float64), raw_score=True),
            rate,
        )
    else:
        strata, weights = np.zeros(0, int), np.zeros(0)
        calibration_x, calibration_y = _platt(np.zeros(0), np.zeros(0, int), np.zeros(0))
    model = FraudModel(
        booster=booster,
        feature_set=feature_set,
        features=feature_names,
        calibration_x=calibration_x,
        calibration_y=calibration_y,
        typical={k: float(v) for k, v in typical.items()},
        positive=positive,
        typical_by_group=typical_by_group(features, feature_names),
        trained_until=split.train_end,
    )
    population["model_score"] = model.predict(model.matrix(population)) if len(population) else np.zeros(0)
    population["rules_score"] = legacy_rule_scores(population) if len(population) else np.zeros(0)
    holdout = holdout.merge(population[["return_id", "model_score", "rules_score"]], on="return_id")
    metrics = evaluate(
        "model",
        holdout["model_score"].to_numpy(),
        holdout,
        capacity=capacity,
        population_scores=population["model_score"].to_numpy(),
        probabilities=holdout["model_score"].to_numpy(),
    )
    metrics.update(
        evaluate(
            "rules",
            holdout["rules_score"].to_numpy(),
            holdout,
            capacity=capacity,
            population_scores=population["rules_score"].to_numpy(),
        )
    )
    labels_test = holdout["label"].to_numpy(int)
    if len(holdout) and holdout["label"].nunique() == 2:
        compared = {"model": holdout["model_score"].to_numpy(), "rules": holdout["rules_score"].to_numpy()}
        metrics.update(bootstrap_compare(labels_test, strata, weights, compared))
    if champion is not None and set(champion.features) <= set(population.columns):
        population["champion_score"] = champion.predict(champion.matrix(population))
        holdout = holdout.merge(population[["return_id", "champion_score"]], on="return_id")
        metrics.update(
            evaluate(
                "champion",
                holdout["champion_score"].to_numpy(),
                holdout,
                capacity=capacity,
                population_scores=population["champion_score"].to_numpy(),
                probabilities=holdout["champion_score"].to_numpy(),
            )
        )
        metrics.update(_against_champion(holdout, strata, weights, champion))
    metrics["rounds"] = float(rounds)
    metrics["ipw_effective_labels"] = float(weights.sum() ** 2 / (weights**2).sum()) if len(weights) else 0.0
    rows = {
        "train": len(train),
        "train_positive": int(train["label"].sum()),
        "valid": len(valid) if valid is not None else 0,
        "test_population": len(population),
        "test_labelled": len(holdout),
        "test_positive": int(holdout["label"].sum()),
    }
    if refit:  # the served booster learns from the test window's labels too, with the same settings
        everything = _window(features, None, split.test_end).merge(labels, on="return_id")
        model.booster, _ = _fit(params, everything, None, feature_names, rounds)
        model.trained_until = split.test_end
        rows["refit"] = len(everything)
    # how its decisions fill the team's review queue: the served booster's scores of the latest returns
    # (few of them labelled yet, so few scored in-sample), as the rules scorer keeps its own
    recent = _window(features, as_of - RECENT, as_of)
    served = model.predict(model.matrix(recent)) if len(recent) else np.zeros(0)
    model.score_quantiles = score_distribution(served)
    cut = review_cut(model.score_quantiles, capacity, review_threshold, deny_threshold)
    metrics.update(
        queue_metrics(
            served,
            (as_of - max(recent["requested_at"].min(), as_of - RECENT)) / pd.Timedelta(days=1)
            if len(recent)
            else 0.0,
            capacity=capacity,
            review_threshold=review_threshold,
            deny_threshold=deny_threshold,
            review_from=cut,
        )
    )
    latest = pd.Timestamp(train["reviewed_at"].max()) if len(train) else None
    return TrainingResult(model, split, metrics, holdout, population, params, rows, latest)


QUEUE_RATIO_MAX = 2.0  # a review queue beyond twice the capacity is a flood, whatever the ranking


def challenger_wins(
    metrics: dict[str, float], metric: str = "reviews_average_precision", min_gain: float = 0.0
) -> tuple[bool, str]:
    """The gate. With the unbiased comparison (`bootstrap_compare`'s keys): the challenger must beat the
    champion (on the test returns the champion never learned from), or the rules scorer when there is no
    champion, with confidence: the lower end of the interval of its lead in re-weighted AP above
    `min_gain`. Without it (older runs): a plain comparison of `metric` on the holdout reviews. Either
    way a challenger whose review queue on the test window would exceed twice the team's capacity fails."""
    ratio = metrics.get("queue_capacity_ratio", float("nan"))
    if ratio == ratio and ratio > QUEUE_RATIO_MAX:
        return False, (
            f"the challenger would hold {metrics['queue_share']:.1%} of returns for review "
            f"({metrics['queue_per_day']:.1f} a day), {ratio:.1f}x the team's capacity "
            f"({metrics['capacity_per_day']:.1f} a day)"
        )
    if "champion_unseen_labelled" in metrics:  # a champion: judged on the returns it never learned from
        if "challenger_minus_champion_lo" not in metrics:
            return False, (
                f"the champion learned from all but {metrics['champion_unseen_labelled']:.0f} of the test "
                "window's labelled returns: too few to judge a challenger against it (it stays)"
            )
        return _with_confidence(metrics, "challenger", "champion", min_gain)
    if "model_ipw_ap" in metrics:  # no champion: against the rules scorer
        return _with_confidence(metrics, "model", "rules", min_gain)
    challenger = metrics.get(f"model_{metric}", float("nan"))
    rules = metrics.get(f"rules_{metric}", float("nan"))
    if math.isnan(challenger):
        return False, f"the challenger has no {metric} on the holdout"
    if not math.isnan(rules) and challenger <= rules:
        return (
            False,
            f"the challenger's {metric} {challenger:.4f} does not beat the legacy rules ({rules:.4f})",
        )
    if f"champion_{metric}" not in metrics:
        return True, f"no champion yet; the challenger's {metric} is {challenger:.4f} (rules {rules:.4f})"
    champion = metrics[f"champion_{metric}"]
    if challenger > champion + min_gain:
        return True, f"the challenger's {metric} {challenger:.4f} beats the champion's {champion:.4f}"
    return False, f"the challenger's {metric} {challenger:.4f} does not beat the champion's {champion:.4f}"


def _with_confidence(metrics: dict[str, float], mine: str, other: str, min_gain: float) -> tuple[bool, str]:
    def interval(name: str) -> str:
        return (
            f"{metrics.get(f'{name}_ipw_ap', float('nan')):.3f} [{metrics.get(f'{name}_ipw_ap_lo', float('nan')):.3f}, "
            f"{metrics.get(f'{name}_ipw_ap_hi', float('nan')):.3f}]"
        )

    lo, hi = metrics[f"{mine}_minus_{other}_lo"], metrics[f"{mine}_minus_{other}_hi"]
    said = f"the challenger's re-weighted AP {interval(mine)} against the {other} {interval(other)}"
    if lo == lo and lo > min_gain:
        return True, f"{said}: better with confidence (lead {lo:+.3f} to {hi:+.3f})"
    return False, f"{said}: does not beat the {other} with confidence (lead {lo:+.3f} to {hi:+.3f})"


def band(score: float, review_threshold: float, deny_threshold: float) -> str:
    if score >= deny_threshold:
        return "critical"
    if score >= review_threshold:
        return "high"
    if score >= review_threshold / 2:
        return "elevated"
    return "low"


__all__ = [
    "FRAUD_FEATURES_V1",
    "POSITIVE",
    "FraudModel",
    "NotEnoughLabels",
    "TrainingResult",
    "band",
    "challenger_wins",
    "labels_as_of",
    "train_fraud",
]
