"""Training end to end, shared by `recoup train` and the Dagster assets: data -> challenger -> MLflow run
and registered version -> gate against the champion on the same holdout -> promotion."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from features.offline import fraud_features, line_features
from models import registry
from models.evaluation import NotEnoughLabels
from models.fraud import FraudModel, TrainingResult, challenger_wins, train_fraud
from models.recovery import RecoveryResult, train_recovery
from models.rules import RulesScorer, fit_rules
from oms.frames import load_frame


@dataclass
class Outcome:
    model: str
    version: str | None  # None: no challenger could be trained (the reason says why)
    promoted: bool
    reason: str
    metrics: dict[str, float] = field(default_factory=dict)


def fraud_challenger(
    features: pd.DataFrame,
    reviews: pd.DataFrame,
    *,
    capacity: float,
    thresholds: tuple[float, float] = (0.2, 0.9),  # review, deny: the shipped policy's
    as_of: pd.Timestamp | None = None,
    artifact_root: str | None = None,
) -> tuple[TrainingResult, str]:
    """Train a challenger, compared on its holdout with the legacy rules and the current champion; logged.
    `thresholds` are the policy's review and deny thresholds (the review queue it would fill is judged)."""
    champion = registry.load_fraud()
    review, deny = thresholds
    result = train_fraud(
        features,
        reviews,
        as_of=as_of,
        capacity=capacity,
        champion=champion,
        review_threshold=review,
        deny_threshold=deny,
    )
    version = registry.log_fraud_run(result, artifact_root=artifact_root)
    return result, version


def gate_fraud(result: TrainingResult, version: str, *, promote: bool = True) -> Outcome:
    wins, reason = challenger_wins(result.metrics)
    if wins and promote:
        registry.promote(version, reason=reason)
    return Outcome(registry.FRAUD_MODEL, version, wins and promote, reason, result.metrics)


def recovery_challenger(
    lines: pd.DataFrame, *, artifact_root: str | None = None
) -> tuple[RecoveryResult, str, str | None]:
    result = train_recovery(lines)
    champion = registry.load_recovery()
    champion_mae = None
    if champion is not None:
        test = result.test
        champion_mae = float(np.mean(np.abs(champion.predict_unit(test) - test["unit_value"].to_numpy())))
        result.metrics["champion_test_mae_per_unit"] = champion_mae
    version = registry.log_recovery_run(result, artifact_root=artifact_root)
    return result, version, champion.version if champion else None


def gate_recovery(result: RecoveryResult, version: str, *, promote: bool = True) -> Outcome:
    mae = result.metrics["test_mae_per_unit"]
    champion = result.metrics.get("champion_test_mae_per_unit")
    model_value, static_value = (
        result.metrics.get("model_replay_value_per_line", np.nan),
        result.metrics.get("static_replay_value_per_line", np.nan),
    )
    if champion is not None and not mae < champion:
        wins, reason = (
            False,
            f"the challenger's MAE {mae:.3f} per unit does not beat the champion's {champion:.3f}",
        )
    elif model_value == model_value and static_value == static_value and model_value < static_value:
        wins, reason = (
            False,
            f"routing by the challenger replays at {model_value:.2f} per line, below the static table's {static_value:.2f}",
        )
    else:
        wins, reason = (
            True,
            f"MAE {mae:.3f} per unit"
            + (f" beats the champion's {champion:.3f}" if champion is not None else " (no champion yet)"),
        )
    if wins and promote:
        registry.promote(version, name=registry.RECOVERY_MODEL, reason=reason)
    return Outcome(registry.RECOVERY_MODEL, version, wins and promote, reason, result.metrics)


def train_fraud_or_rules(
    features: pd.DataFrame,
    reviews: pd.DataFrame,
    *,
    capacity: float,
    thresholds: tuple[float, float] = (0.2, 0.9),  # review, deny: the shipped policy's
    artifact_root: str | None = None,
    promote: bool = True,
) -> Outcome:
    """A fraud challenger through its gate, then the rules scorer refitted on every label and saved, so
    that whatever the labels allow serves: the champion, or the rules scorer with why no model is
    champion. Too few labels is an outcome (no version), not a failure."""
    try:
        result, version = fraud_challenger(
            features, reviews, capacity=capacity, thresholds=thresholds, artifact_root=artifact_root
        )
    except NotEnoughLabels as exc:
        outcome = Outcome(registry.FRAUD_MODEL, None, False, str(exc))
    else:
        outcome = gate_fraud(result, version, promote=promote)
    save_rules_scorer(features, reviews, outcome.reason)
    return outcome


def save_rules_scorer(features: pd.DataFrame, reviews: pd.DataFrame, reason: str) -> RulesScorer:
    champion = registry.champion_version()
    why = (
        f"version {champion} is the champion; the rules scorer stands by"
        if champion is not None
        else f"no fraud model is champion: {reason}"
    )
    rules = fit_rules(features, reviews, why=why)
    registry.save_rules(rules)
    return rules


def train_all(
    engine: Engine,
    *,
    capacity: float,
    thresholds: tuple[float, float] = (0.2, 0.9),  # review, deny: the shipped policy's
    artifact_root: str | None = None,
) -> list[Outcome]:
    """Both models from the state database, each through its gate."""
    features = fraud_features(engine)
    reviews = load_frame(engine, "fraud_reviews", ["return_id", "reviewed_at", "outcome", "source"])
    outcomes = [
        train_fraud_or_rules(
            features, reviews, capacity=capacity, thresholds=thresholds, artifact_root=artifact_root
        )
    ]
    recovery, recovery_version, _ = recovery_challenger(line_features(engine), artifact_root=artifact_root)
    outcomes.append(gate_recovery(recovery, recovery_version))
    return outcomes


def champion_or_none() -> FraudModel | None:
    return registry.load_fraud()
