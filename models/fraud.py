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
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from features.catalogue import FEATURE_SETS, FRAUD_FEATURE_SET, FRAUD_FEATURES_V1, names
from models.evaluation import Split, evaluate, legacy_rule_scores, time_split
from models.native import RowPredictor

POSITIVE = ("fraud", "abuse")
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


MIN_AUDIT = 150
MIN_AUDIT_POSITIVES = 8


def _calibration(
    booster, features, reviews, split: Split, positive, feature_names, valid
) -> tuple[np.ndarray, np.ndarray, str]:
    """Map the booster's probability to a probability for the whole population of returns.

    The labelled returns are mostly those the legacy rules flagged, so a calibration fitted on them
    overstates risk for everyone else. The random audit is an unbiased sample: when it holds enough
    labels (before the test period) a logistic (Platt) fit of the margin on it sets the scale; otherwise
    isotonic regression on the validation reviews is used (and the metrics say so).
    """
    labels = labels_as_of(reviews, split.test_start, positive)
    audited = labels[labels["source"] == "random_audit"].merge(
        _window(features, None, split.valid_end), on="return_id"
    )
    grid = np.linspace(0.0, 1.0, 201)
    if len(audited) >= MIN_AUDIT and audited["label"].sum() >= MIN_AUDIT_POSITIVES:
        raw = booster.predict(audited[feature_names].to_numpy(np.float64), raw_score=True).reshape(-1, 1)
        platt = LogisticRegression(C=1.0).fit(raw, audited["label"].to_numpy())
        margins = np.log(np.clip(grid, 1e-9, 1 - 1e-9) / np.clip(1 - grid, 1e-9, 1))
        return grid, platt.predict_proba(margins.reshape(-1, 1))[:, 1], "audit"
    valid_raw = booster.predict(valid[feature_names].to_numpy(np.float64), raw_score=True)
    isotonic = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip", increasing=True)
    isotonic.fit(1.0 / (1.0 + np.exp(-valid_raw)), valid["label"].to_numpy())
    return (
        np.asarray(isotonic.X_thresholds_, dtype=float),
        np.asarray(isotonic.y_thresholds_, dtype=float),
        "reviews",
    )


def _window(features: pd.DataFrame, start: pd.Timestamp | None, end: pd.Timestamp) -> pd.DataFrame:
    requested = features["requested_at"]
    mask = requested < end if start is None else (requested >= start) & (requested < end)
    return features[mask]


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
) -> TrainingResult:
    """Train, calibrate and evaluate a challenger (against the legacy rules and the champion, if any)."""
    params = {**DEFAULT_PARAMS, **(params or {})}
    feature_names = names(FEATURE_SETS[feature_set])
    as_of = as_of or features["requested_at"].max() + pd.Timedelta(seconds=1)
    split = split or time_split(as_of)
    # what the model may learn from: labels known when it would have been trained (at test start)
    train = _window(features, None, split.train_end).merge(
        labels_as_of(reviews, split.train_labels_until, positive), on="return_id"
    )
    valid = _window(features, split.valid_start, split.valid_end).merge(
        labels_as_of(reviews, split.test_start, positive), on="return_id"
    )
    population = _window(features, split.test_start, split.test_end).reset_index(drop=True)
    holdout = population.merge(labels_as_of(reviews, as_of, positive), on="return_id")
    if train["label"].nunique() < 2 or valid["label"].nunique() < 2:
        raise ValueError(
            f"not enough labelled returns to train: {len(train)} in training ({int(train['label'].sum())} positive), "
            f"{len(valid)} in validation ({int(valid['label'].sum())} positive)"
        )
    train_set = lgb.Dataset(
        train[feature_names].to_numpy(np.float64),
        label=train["label"].to_numpy(),
        feature_name=feature_names,
        free_raw_data=False,
    )
    valid_set = lgb.Dataset(
        valid[feature_names].to_numpy(np.float64), label=valid["label"].to_numpy(), reference=train_set
    )
    booster = lgb.train(
        params,
        train_set,
        num_boost_round=MAX_ROUNDS,
        valid_sets=[valid_set],
        valid_names=["valid"],
        callbacks=[lgb.early_stopping(EARLY_STOPPING, verbose=False)],
    )
    calibration_x, calibration_y, calibrated_on = _calibration(
        booster, features, reviews, split, positive, feature_names, valid
    )
    typical = features[feature_names].median(numeric_only=True).to_dict()
    model = FraudModel(
        booster=booster,
        feature_set=feature_set,
        features=feature_names,
        calibration_x=calibration_x,
        calibration_y=calibration_y,
        typical={k: float(v) for k, v in typical.items()},
        positive=positive,
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
    metrics["best_iteration"] = float(booster.best_iteration)
    metrics["calibrated_on_audit"] = float(calibrated_on == "audit")
    rows = {
        "train": len(train),
        "train_positive": int(train["label"].sum()),
        "valid": len(valid),
        "test_population": len(population),
        "test_labelled": len(holdout),
    }
    latest = pd.Timestamp(train["reviewed_at"].max()) if len(train) else None
    return TrainingResult(model, split, metrics, holdout, population, params, rows, latest)


def challenger_wins(
    metrics: dict[str, float], metric: str = "reviews_average_precision", min_gain: float = 0.0
) -> tuple[bool, str]:
    """The gate: the challenger must beat the champion on the same holdout (and the legacy rules)."""
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
    "TrainingResult",
    "band",
    "challenger_wins",
    "labels_as_of",
    "train_fraud",
]
