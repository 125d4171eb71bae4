"""MLflow tracking and the model registry: runs, versions, the `champion` alias, and loading it.

Every training is an MLflow run (params, metrics, plots, feature-set version, data window, git commit);
the booster is logged with `log_model(name=...)`, a signature and an input example, and registered as a
new version. The `champion` alias moves only through `promote` (the gate calls it when the challenger
wins); `rollback` points it back at the previous champion.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
import tempfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import lightgbm as lgb
import mlflow
import mlflow.lightgbm
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from models.fraud import FraudModel, TrainingResult

FRAUD_MODEL = "recoup-fraud"
RECOVERY_MODEL = "recoup-recovery"
CHAMPION = "champion"
PREVIOUS = "previous-champion"
META_FILE = "recoup_model.json"


def configure(tracking_uri: str, artifact_root: str | None = None) -> MlflowClient:
    """Point MLflow at the store (a SQLite file under var/ by default, a tracking server in production)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    if artifact_root:
        Path(artifact_root).mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _experiment(name: str, artifact_root: str | None) -> str:
    existing = mlflow.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    location = Path(artifact_root, name).resolve().as_uri() if artifact_root else None
    return mlflow.create_experiment(name, artifact_location=location)


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _plots(result: TrainingResult, directory: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve

    from models.evaluation import calibration_curve

    paths = []
    holdout = result.holdout
    figure, axis = plt.subplots(figsize=(5, 4))
    for column, label in (
        ("model_score", "model"),
        ("rules_score", "legacy rules"),
        ("champion_score", "champion"),
    ):
        if column in holdout and holdout["label"].nunique() == 2:
            precision, recall, _ = precision_recall_curve(holdout["label"], holdout[column])
            axis.plot(recall, precision, label=label)
    axis.set_xlabel("recall")
    axis.set_ylabel("precision")
    axis.set_title("Holdout reviews: precision-recall")
    axis.legend()
    paths.append(directory / "pr_curve.png")
    figure.savefig(paths[-1], dpi=100, bbox_inches="tight")
    plt.close(figure)
    if holdout.empty:
        return paths

    curve = calibration_curve(holdout["model_score"].to_numpy(), holdout["label"].to_numpy())
    figure, axis = plt.subplots(figsize=(5, 4))
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey")
    axis.plot(curve["predicted"], curve["observed"], marker="o")
    axis.set_xlabel("predicted probability")
    axis.set_ylabel("observed rate")
    axis.set_title("Calibration (holdout reviews)")
    paths.append(directory / "calibration.png")
    figure.savefig(paths[-1], dpi=100, bbox_inches="tight")
    plt.close(figure)

    importance = (
        pd.Series(result.model.booster.feature_importance("gain"), index=result.model.features)
        .sort_values()
        .tail(20)
    )
    figure, axis = plt.subplots(figsize=(6, 6))
    importance.plot.barh(ax=axis)
    axis.set_title("Feature importance (gain)")
    paths.append(directory / "feature_importance.png")
    figure.savefig(paths[-1], dpi=100, bbox_inches="tight")
    plt.close(figure)

    sample = result.population.head(2000)
    if len(sample):
        contributions = result.model.contributions(result.model.matrix(sample))[:, :-1]
        summary = (
            pd.Series(np.abs(contributions).mean(axis=0), index=result.model.features).sort_values().tail(20)
        )
        figure, axis = plt.subplots(figsize=(6, 6))
        summary.plot.barh(ax=axis)
        axis.set_title("Mean |contribution| to the score (test returns)")
        paths.append(directory / "contribution_summary.png")
        figure.savefig(paths[-1], dpi=100, bbox_inches="tight")
        plt.close(figure)
    return paths


def log_fraud_run(
    result: TrainingResult, *, artifact_root: str | None = None, data_window: dict[str, str] | None = None
) -> str:
    """Log the training as an MLflow run and register the booster as a new version; returns the version."""
    _experiment(FRAUD_MODEL, artifact_root)
    mlflow.set_experiment(FRAUD_MODEL)
    model = result.model
    with mlflow.start_run(run_name="fraud-training") as run:
        mlflow.log_params(
            {
                **{k: v for k, v in result.params.items() if k != "verbose"},
                "feature_set": model.feature_set,
                "positive": ",".join(model.positive),
            }
        )
        mlflow.log_params({f"split_{k}": v for k, v in result.split.describe().items()})
        mlflow.log_metrics({k: float(v) for k, v in result.metrics.items() if v == v})
        mlflow.log_metrics({f"rows_{k}": float(v) for k, v in result.rows.items()})
        mlflow.set_tags(
            {
                "feature_set": model.feature_set,
                "git_commit": git_commit(),
                "data_window": json.dumps(data_window or result.split.describe()),
            }
        )
        with tempfile.TemporaryDirectory() as scratch:
            for path in _plots(result, Path(scratch)):
                mlflow.log_artifact(str(path), artifact_path="plots")
        mlflow.log_dict(model.meta(), META_FILE)
        example = (
            result.population[model.features].head(5).astype(float)
            if len(result.population)
            else pd.DataFrame(columns=model.features)
        )
        signature = (
            infer_signature(example, model.booster.predict(example.to_numpy(), raw_score=True))
            if len(example)
            else None
        )
        info = mlflow.lightgbm.log_model(
            model.booster,
            name="model",
            signature=signature,
            input_example=example if len(example) else None,
            registered_model_name=FRAUD_MODEL,
            pip_requirements=_requirements(),
        )
        version = str(info.registered_model_version)
        client = MlflowClient()
        client.set_model_version_tag(FRAUD_MODEL, version, "run_id", run.info.run_id)
        client.set_model_version_tag(FRAUD_MODEL, version, "feature_set", model.feature_set)
        model.version = version
    return version


@functools.cache
def _requirements() -> list[str]:
    """What loading a logged booster needs, pinned to the versions here. Given, so that MLflow does not
    infer them by importing the model in a subprocess (measured: 25 of 58 s of `recoup train` on a
    5,000-customer history)."""
    return [f"{name}=={version(name)}" for name in ("lightgbm", "numpy", "pandas", "scikit-learn")]


@dataclass(frozen=True)
class VersionInfo:
    version: str
    aliases: tuple[str, ...]
    run_id: str
    created: pd.Timestamp
    metrics: dict[str, float]


def versions(name: str = FRAUD_MODEL) -> list[VersionInfo]:
    client = MlflowClient()
    try:
        found = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return []
    out = []
    for listed in sorted(found, key=lambda v: int(v.version)):
        item = client.get_model_version(name, listed.version)  # search results omit aliases
        run = client.get_run(item.run_id) if item.run_id else None
        out.append(
            VersionInfo(
                version=str(item.version),
                aliases=tuple(item.aliases),
                run_id=item.run_id or "",
                created=pd.Timestamp(item.creation_timestamp, unit="ms", tz="UTC"),
                metrics=dict(run.data.metrics) if run else {},
            )
        )
    return out


def champion_version(name: str = FRAUD_MODEL) -> str | None:
    try:
        return str(MlflowClient().get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None


def promote(version: str, name: str = FRAUD_MODEL, reason: str = "") -> None:
    """Make `version` the champion (the previous one is remembered for rollback)."""
    client = MlflowClient()
    client.get_model_version(name, version)  # raises for an unknown version
    current = champion_version(name)
    if current is not None and current != version:
        client.set_registered_model_alias(name, PREVIOUS, current)
    client.set_registered_model_alias(name, CHAMPION, version)
    client.set_model_version_tag(name, version, "promoted_because", reason or "manual promotion")


def rollback(name: str = FRAUD_MODEL) -> str:
    """Point the champion back at the previous champion; returns that version."""
    client = MlflowClient()
    try:
        previous = str(client.get_model_version_by_alias(name, PREVIOUS).version)
    except MlflowException as exc:
        raise LookupError(f"{name} has no previous champion to roll back to") from exc
    current = champion_version(name)
    client.set_registered_model_alias(name, CHAMPION, previous)
    if current is not None:
        client.set_registered_model_alias(name, PREVIOUS, current)
    return previous


def _load(name: str, version: str | None) -> tuple[lgb.Booster, dict, str] | None:
    """A registered version (the champion when not given): native booster, its metadata, its version."""
    client = MlflowClient()
    try:
        item = (
            client.get_model_version(name, version)
            if version
            else client.get_model_version_by_alias(name, CHAMPION)
        )
    except MlflowException:
        return None
    booster = mlflow.lightgbm.load_model(f"models:/{name}/{item.version}")
    if not isinstance(booster, lgb.Booster):
        booster = booster.booster_
    meta = mlflow.artifacts.load_dict(f"runs:/{item.run_id}/{META_FILE}")
    return booster, meta, str(item.version)


def load_fraud(version: str | None = None, name: str = FRAUD_MODEL) -> FraudModel | None:
    """The champion (or a given version) as a native booster with its metadata; None if there is none."""
    found = _load(name, version)
    if found is None:
        return None
    booster, meta, found_version = found
    return FraudModel.from_meta(booster, meta, version=found_version)


RULES_TAG = "rules_scorer"


def save_rules(scorer, name: str = FRAUD_MODEL) -> None:
    """Keep the rules scorer (its weights and why it serves) as a tag of the registered fraud model."""
    client = MlflowClient()
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name)
    client.set_registered_model_tag(name, RULES_TAG, json.dumps(scorer.meta()))


def load_rules(name: str = FRAUD_MODEL):
    """The rules scorer as last fitted (`save_rules`), or the prior rules when none was fitted yet."""
    from models.rules import RulesScorer

    try:
        tags = MlflowClient().get_registered_model(name).tags
    except MlflowException:
        return RulesScorer()
    return RulesScorer.from_meta(json.loads(tags[RULES_TAG])) if RULES_TAG in tags else RulesScorer()


def load_serving(name: str = FRAUD_MODEL):
    """What scores fraud now: the champion model, or the rules scorer when there is none."""
    return load_fraud(name=name) or load_rules(name)


def version_tag(version: str, key: str, name: str = FRAUD_MODEL) -> Any:
    return MlflowClient().get_model_version(name, version).tags.get(key)


def log_recovery_run(result, *, artifact_root: str | None = None) -> str:
    """Log the recovery model's training and register it as a new version of `recoup-recovery`."""
    _experiment(RECOVERY_MODEL, artifact_root)
    mlflow.set_experiment(RECOVERY_MODEL)
    model = result.model
    with mlflow.start_run(run_name="recovery-training") as run:
        mlflow.log_params(
            {**{k: v for k, v in result.params.items() if k != "verbose"}, "feature_set": model.feature_set}
        )
        mlflow.log_metrics({k: float(v) for k, v in result.metrics.items() if v == v})
        mlflow.log_metrics({f"rows_{k}": float(v) for k, v in result.rows.items()})
        mlflow.set_tags({"feature_set": model.feature_set, "git_commit": git_commit()})
        mlflow.log_dict(model.meta(), META_FILE)
        example = result.test[model.features].head(5)
        encoded = pd.DataFrame(model.encode(example), columns=model.features)
        signature = (
            infer_signature(encoded, model.booster.predict(encoded.to_numpy())) if len(encoded) else None
        )
        info = mlflow.lightgbm.log_model(
            model.booster,
            name="model",
            signature=signature,
            input_example=encoded if len(encoded) else None,
            registered_model_name=RECOVERY_MODEL,
            pip_requirements=_requirements(),
        )
        version = str(info.registered_model_version)
        MlflowClient().set_model_version_tag(RECOVERY_MODEL, version, "run_id", run.info.run_id)
        model.version = version
    return version


def load_recovery(version: str | None = None):
    """The recovery champion (or a version) with its vocabulary; None if there is none."""
    from models.recovery import RecoveryModel

    found = _load(RECOVERY_MODEL, version)
    if found is None:
        return None
    booster, meta, found_version = found
    return RecoveryModel.from_meta(booster, meta, version=found_version)


def run_metrics(version: str, name: str = FRAUD_MODEL) -> dict[str, float]:
    client = MlflowClient()
    item = client.get_model_version(name, version)
    return dict(client.get_run(item.run_id).data.metrics) if item.run_id else {}
