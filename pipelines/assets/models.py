"""Model assets: training set, challengers (MLflow runs), champions (promoted by their gates; the fraud
gate never leaves the retailer without a scorer), batch scores, and the merchandising/operations
analytics."""

import dagster as dg
import pandas as pd

from features import analytics
from features.catalogue import FRAUD_FEATURE_SET
from features.offline import line_features
from models import registry
from models.evaluation import NotEnoughLabels
from models.fraud import challenger_wins, labels_as_of
from models.rules import VERSION as RULES_VERSION
from models.scoring import score_frame, write_scores
from models.training import fraud_challenger as train_fraud_challenger
from models.training import gate_recovery, save_rules_scorer
from models.training import recovery_challenger as train_recovery_challenger
from oms.frames import load_frame
from oms.policy import load_policy
from oms.settings import get_settings
from pipelines.assets.features import source_tables
from pipelines.resources import DatabaseResource, MlflowResource


def _reviews(database: DatabaseResource) -> pd.DataFrame:
    return load_frame(database.engine, "fraud_reviews", ["return_id", "reviewed_at", "outcome", "source"])


@dg.asset(group_name="models", io_manager_key="frames", metadata={"feature_set": FRAUD_FEATURE_SET})
def fraud_training_set(return_features: pd.DataFrame, database: DatabaseResource) -> pd.DataFrame:
    """Every return's features with its latest review label (empty where not reviewed)."""
    labels = labels_as_of(_reviews(database), pd.Timestamp.now(tz="UTC"))
    return return_features.merge(labels, on="return_id", how="left")


@dg.asset(group_name="models")
def fraud_challenger(
    return_features: pd.DataFrame, database: DatabaseResource, mlflow: MlflowResource
) -> dict:
    """A new fraud model: trained, compared with the rules and the champion on its test window (re-weighted
    for how the reviews were chosen, with bootstrap intervals), registered. With too few labels there is
    no challenger (`version` None) and the reason gives the counts."""
    artifact_root = mlflow.setup()
    policy = load_policy(get_settings().policy_path)
    try:
        result, version = train_fraud_challenger(
            return_features,
            _reviews(database),
            capacity=policy.fraud.review_capacity,
            thresholds=(policy.fraud.review_threshold, policy.fraud.deny_threshold),
            artifact_root=artifact_root,
        )
    except NotEnoughLabels as exc:
        return {"version": None, "metrics": {}, "wins": False, "reason": str(exc)}
    wins, reason = challenger_wins(result.metrics)
    return {"version": version, "metrics": result.metrics, "wins": wins, "reason": reason}


@dg.asset_check(
    asset=fraud_challenger,
    description="The challenger beats the champion (or the rules scorer) with confidence on the same test "
    "window. Not blocking: when it fails, fraud_champion keeps the champion or the rules scorer serving.",
)
def fraud_beats_champion(fraud_challenger: dict) -> dg.AssetCheckResult:
    metrics = fraud_challenger["metrics"]

    def value(key: str) -> float:
        return float(metrics.get(key, float("nan")))

    return dg.AssetCheckResult(
        passed=bool(fraud_challenger["wins"]),
        metadata={
            "reason": fraud_challenger["reason"],
            "version": fraud_challenger["version"] or "-",
            **{
                f"{name}_ipw_ap{end}": value(f"{name}_ipw_ap{end}")
                for name in ("model", "champion", "rules")
                for end in ("", "_lo", "_hi")
            },
        },
    )


@dg.asset(group_name="models")
def fraud_champion(
    fraud_challenger: dict, return_features: pd.DataFrame, database: DatabaseResource, mlflow: MlflowResource
) -> dg.MaterializeResult:
    """What scores fraud from now on: the challenger if it passed the gate (the `champion` alias moves),
    else the champion as it is, or the rules scorer (refitted on every label) while there is none."""
    mlflow.setup()
    if fraud_challenger["wins"]:
        registry.promote(fraud_challenger["version"], reason=fraud_challenger["reason"])
    save_rules_scorer(return_features, _reviews(database), fraud_challenger["reason"])
    serving = registry.load_serving()
    return dg.MaterializeResult(
        metadata={
            "serving": serving.version,
            "promoted": bool(fraud_challenger["wins"]),
            "why": serving.why if serving.version == RULES_VERSION else fraud_challenger["reason"],
        }
    )


@dg.asset(group_name="models", deps=[source_tables])
def recovery_challenger(database: DatabaseResource, mlflow: MlflowResource) -> dict:
    """A new recovery model, trained on realised disposition outcomes and registered."""
    artifact_root = mlflow.setup()
    result, version, _ = train_recovery_challenger(
        line_features(database.engine), artifact_root=artifact_root
    )
    outcome = gate_recovery(result, version, promote=False)
    return {
        "version": version,
        "metrics": result.metrics,
        "passes": outcome.promoted or _would_promote(outcome.reason),
        "reason": outcome.reason,
    }


def _would_promote(reason: str) -> bool:
    return "does not beat" not in reason and "below the static" not in reason


@dg.asset_check(
    asset=recovery_challenger,
    blocking=True,
    description="The recovery challenger beats the champion's error and the static routing.",
)
def recovery_beats_champion(recovery_challenger: dict) -> dg.AssetCheckResult:
    metrics = recovery_challenger["metrics"]
    return dg.AssetCheckResult(
        passed=bool(recovery_challenger["passes"]),
        metadata={
            "reason": recovery_challenger["reason"],
            "version": recovery_challenger["version"],
            "mae": metrics["test_mae_per_unit"],
            "champion_mae": metrics.get("champion_test_mae_per_unit", -1.0),
        },
    )


@dg.asset(group_name="models")
def recovery_champion(recovery_challenger: dict, mlflow: MlflowResource) -> dg.MaterializeResult:
    """Moves the recovery `champion` alias to the challenger (reached only when its gate passed)."""
    mlflow.setup()
    registry.promote(
        recovery_challenger["version"],
        name=registry.RECOVERY_MODEL,
        reason="passed the recovery_beats_champion gate",
    )
    return dg.MaterializeResult(metadata={"champion": recovery_challenger["version"]})


@dg.asset(group_name="models", deps=[fraud_champion])
def return_scores(
    return_features: pd.DataFrame, database: DatabaseResource, mlflow: MlflowResource
) -> dg.MaterializeResult:
    """Every return scored (score, band, decision, reasons) into the `return_scores` table: by the champion,
    or by the rules scorer (model version "rules") while there is none."""
    mlflow.setup()
    model = registry.load_serving()
    scored = score_frame(model, return_features, load_policy(get_settings().policy_path))
    written = write_scores(database.engine, model, scored)
    return dg.MaterializeResult(
        metadata={
            "rows": written,
            "model_version": model.version,
            **{f"band_{k}": int(v) for k, v in scored["band"].value_counts().items()},
        }
    )


@dg.asset(group_name="analytics", deps=[source_tables])
def merchandising_analytics(database: DatabaseResource) -> dg.MaterializeResult:
    """Return rates with abnormal items, size curves, limbo ageing, dispositions, cycle times, BORIS."""
    inputs = analytics.load_inputs(database.engine)
    # computed now: limbo ages and sale maturity count from this run, even when the history ended earlier
    as_of = max(pd.Timestamp.now(tz="UTC"), analytics.resolve_as_of(inputs))
    tables = analytics.build_all(inputs, as_of)
    analytics.write_all(database.engine, tables)
    return dg.MaterializeResult(metadata={name: len(frame) for name, frame in tables.items()})


@dg.asset(group_name="analytics", deps=[source_tables])
def serving_skew(database: DatabaseResource) -> dg.MaterializeResult:
    """Features served by the API recomputed offline for the same returns: mismatches per feature."""
    from features.skew import serving_skew as compute_skew

    skew = compute_skew(database.engine)
    with database.engine.begin() as connection:
        skew.to_sql("analytics_serving_skew", connection, if_exists="replace", index=False)
    mismatched = int(skew["mismatched"].sum()) if len(skew) else 0
    return dg.MaterializeResult(
        metadata={
            "features": len(skew),
            "mismatched_values": mismatched,
            "compared_returns": int(skew["compared"].max()) if len(skew) else 0,
        }
    )
