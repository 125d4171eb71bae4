"""The rules scorer: what serves when there is no model champion (too few labels, or no challenger that
beat the rules with confidence), so a retailer always has a score to rank its returns by.

It is the legacy rules (`models.evaluation.LEGACY_RULES`, the ones that chose the reviews), each rule
weighted in log-odds by a logistic fit on the labelled returns re-weighted by inverse propensity, with
weights kept >= 0 (a rule never lowers the risk) and a prior when the labels are too few. It has the
shape of `FraudModel` (features, `matrix`, `contributions`, `calibrate`, `rows.predict_rows`), so batch
scoring, the API and the dashboards serve it as they serve a model, with `model_version: "rules"`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from models.evaluation import (
    LEGACY_RULES,
    level_shift,
    population_rate,
    propensity_weights,
    review_cut,
    rule_strata,
    score_distribution,
)
from models.fraud import POSITIVE, RECENT, SCORE_CEILING, SCORE_FLOOR, labels_as_of

VERSION = "rules"
FEATURES = ["receiptless", "return_value", "cust_returns_30d", "refund_cash"]
# each rule's weight is reported on the feature that makes it fire
RULE_FEATURE = {
    "receiptless_over_75": "receiptless",
    "frequent_returner": "cust_returns_30d",
    "high_value": "return_value",
    "cash_over_150": "refund_cash",
}
PRIOR_BASE = math.log(0.02 / 0.98)  # about 2 % of returns are fraud or abuse
PRIOR_WEIGHT = 1.5  # each rule hit multiplies the odds by about 4.5
MIN_LABELS, MIN_CLASS = 30, 5
TIE_BREAK = 1e-3  # log-odds per log(1 + value): 0.014 between a return of 1.00 and one of 1,000,000


def hits(matrix: np.ndarray) -> np.ndarray:
    """Which rules each row hits (columns in `LEGACY_RULES` order), from a matrix in `FEATURES` order."""
    columns = dict(zip(FEATURES, matrix.T, strict=True))
    return np.column_stack([rule(columns) for rule in LEGACY_RULES.values()])


@dataclass
class RulesScorer:
    base: float = PRIOR_BASE
    weights: dict[str, float] = field(default_factory=lambda: dict.fromkeys(LEGACY_RULES, PRIOR_WEIGHT))
    why: str = "no fraud model has been trained yet"
    labels: int = 0
    fitted: bool = False
    version: str = VERSION
    features: list[str] = field(default_factory=lambda: list(FEATURES))
    feature_set: str = "LEGACY_RULES"
    positive: tuple[str, ...] = POSITIVE
    typical: dict[str, float] = field(default_factory=dict)
    typical_by_group: dict[str, dict[str, float]] = field(default_factory=dict)
    score_quantiles: np.ndarray = field(default_factory=lambda: np.zeros(0))  # on recent returns

    def review_from(self, fraud: Any) -> float:
        """The score from which returns are held for review (see `models.evaluation.review_cut`)."""
        return review_cut(
            self.score_quantiles, fraud.review_capacity, fraud.review_threshold, fraud.deny_threshold
        )

    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        return frame[self.features].to_numpy(dtype=np.float64)

    def contributions(self, matrix: np.ndarray) -> np.ndarray:
        """Per feature, the weights of the rules it fired; last column the base (they sum to `raw`)."""
        fired = hits(matrix)
        out = np.zeros((len(matrix), len(self.features) + 1))
        for column, rule in enumerate(LEGACY_RULES):
            out[:, self.features.index(RULE_FEATURE[rule])] += fired[:, column] * self.weights[rule]
        # within the same rules hit, the larger return first (as the legacy rules break ties): a nudge far
        # below any rule's weight, kept in the base column so that it is never given as a reason
        value = np.clip(np.nan_to_num(matrix[:, self.features.index("return_value")], nan=0.0), 0.0, 1e6)
        out[:, -1] = self.base + TIE_BREAK * np.log1p(value)
        return out

    def raw(self, matrix: np.ndarray) -> np.ndarray:
        return self.contributions(matrix).sum(axis=1)

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        return np.clip(1.0 / (1.0 + np.exp(-np.asarray(raw, dtype=float))), SCORE_FLOOR, SCORE_CEILING)

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        return self.calibrate(self.raw(matrix))

    @property
    def rows(self) -> RulesScorer:
        return self

    def predict_rows(self, matrix: np.ndarray, kind: str = "contrib") -> np.ndarray:
        """What `models.native.RowPredictor` answers for a model (contributions only)."""
        if kind != "contrib":
            raise ValueError(f"the rules scorer gives contributions, not {kind!r}")
        return self.contributions(matrix)

    def meta(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "weights": self.weights,
            "why": self.why,
            "labels": self.labels,
            "fitted": self.fitted,
            "score_quantiles": self.score_quantiles.tolist(),
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> RulesScorer:
        return cls(
            base=float(meta["base"]),
            weights={k: float(v) for k, v in meta["weights"].items()},
            why=str(meta.get("why", "")),
            labels=int(meta.get("labels", 0)),
            fitted=bool(meta.get("fitted", False)),
            score_quantiles=np.asarray(meta.get("score_quantiles", []), dtype=float),
        )


def fit_rules(
    features: pd.DataFrame,
    reviews: pd.DataFrame,
    *,
    positive: tuple[str, ...] = POSITIVE,
    why: str = "",
) -> RulesScorer:
    """The rules weighted by the labels: a logistic fit of the label on the rules hit, over every labelled
    return, re-weighted by inverse propensity (the rules chose most reviews); weights clipped at 0, and
    the base set so that the mean score over every return is the fraud rate the reviews estimate (each
    standing for the returns of its selection channel: `population_rate`). With fewer than
    `MIN_LABELS` labels (`MIN_CLASS` of each class) the prior weights stand."""
    labels = labels_as_of(reviews, pd.Timestamp.max.tz_localize("UTC"), positive)
    labels = labels[labels["source"] != "chargeback"]
    labelled = features.merge(labels[["return_id", "label", "source"]], on="return_id")
    scorer = RulesScorer(why=why or "no fraud model is champion", labels=len(labelled))
    y = labelled["label"].to_numpy(int)
    if len(labelled) >= MIN_LABELS and min(int(y.sum()), int((1 - y).sum())) >= MIN_CLASS:
        x = hits(scorer.matrix(labelled)).astype(float)
        weights = propensity_weights(labelled, features)
        fit = LogisticRegression(C=1.0).fit(x, y, sample_weight=weights / weights.mean())
        scorer.weights = {
            rule: float(max(weight, 0.0)) for rule, weight in zip(LEGACY_RULES, fit.coef_[0], strict=True)
        }
        rate = population_rate(labelled, features)
        without_base = scorer.raw(scorer.matrix(features)) - scorer.base
        scorer.base = level_shift(without_base, float(np.clip(rate, SCORE_FLOOR, SCORE_CEILING)))
        scorer.fitted = True
    if len(features):  # how its scores fall on recent returns, for the review queue's cut
        recent = features[features["requested_at"] >= features["requested_at"].max() - RECENT]
        scorer.score_quantiles = score_distribution(scorer.predict(scorer.matrix(recent)))
    return scorer


__all__ = ["FEATURES", "VERSION", "RulesScorer", "fit_rules", "hits", "rule_strata"]
