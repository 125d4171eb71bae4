"""Cached loaders for the pages: `@st.cache_data` wrappers of `dashboards.queries` keyed by database URL.

Pages call these, never the queries directly, so tests can patch or `.clear()` them and every session of
one server shares the results for their `ttl`. Writes (analyst decisions) go through `decide`, which
clears the loaders whose results it changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from dashboards import monitoring, queries
from oms.db import make_engine, normalise_url

FAST = 60  # seconds: state that analysts change (the queue, a return, a customer)
SLOW = 600  # seconds: derived tables rebuilt by the pipelines (analytics, scores, model registry)


def database_url() -> str:
    from oms.settings import get_settings

    return get_settings().database_url


@st.cache_resource(show_spinner=False)
def engine(url: str) -> Engine:
    if make_url(normalise_url(url)).get_backend_name() == "postgresql":
        # Dashboard queries are short; PostgreSQL's JIT compiles for longer than they run.
        return make_engine(url, connect_args={"options": "-c timezone=UTC -c jit=off"})
    return make_engine(url)


# --- what exists -----------------------------------------------------------------------------------


@st.cache_data(ttl=SLOW, show_spinner=False)
def table_names(url: str) -> set[str]:
    return queries.table_names(engine(url))


@st.cache_data(ttl=SLOW, show_spinner=False)
def locations(url: str) -> pd.DataFrame:
    return queries.locations(engine(url))


@st.cache_data(ttl=SLOW, show_spinner=False)
def scored_versions(url: str) -> pd.DataFrame:
    return queries.scored_versions(engine(url))


@st.cache_data(ttl=SLOW, show_spinner=False)
def policy(path: str) -> Any:
    from oms.policy import load_policy

    return load_policy(path)


def current_policy() -> Any:
    from oms.settings import get_settings

    return policy(str(get_settings().policy_path))


# --- the model registry (MLflow) -------------------------------------------------------------------


@dataclass(frozen=True)
class Registry:
    """What MLflow says about the fraud model; `error` when the store could not be read."""

    tracking_uri: str
    champion: str | None
    versions: pd.DataFrame  # version, aliases, created, run_id
    metrics: dict[str, dict[str, float]]  # per version
    params: dict[str, dict[str, str]]  # per version (the run's params: split dates, feature set...)
    error: str | None = None
    rules: dict | None = None  # the rules scorer (`models.rules`): weights, why it serves, labels


@st.cache_data(ttl=SLOW, show_spinner=False)
def registry(tracking_uri: str, artifact_root: str) -> Registry:
    empty = pd.DataFrame(columns=["version", "aliases", "created", "run_id"])
    try:
        from mlflow import MlflowClient

        from models import registry as mlflow_registry

        mlflow_registry.configure(tracking_uri, artifact_root)
        listed = mlflow_registry.versions()
        champion = mlflow_registry.champion_version()
        rules = mlflow_registry.load_rules().meta()
        client = MlflowClient()
        params = {}
        for item in listed:
            params[item.version] = dict(client.get_run(item.run_id).data.params) if item.run_id else {}
    except Exception as exc:  # a broken or unreachable store must not break the page
        return Registry(tracking_uri, None, empty, {}, {}, f"{type(exc).__name__}: {exc}")
    versions = pd.DataFrame(
        [
            {"version": v.version, "aliases": ", ".join(v.aliases), "created": v.created, "run_id": v.run_id}
            for v in listed
        ],
        columns=empty.columns,
    )
    return Registry(
        tracking_uri, champion, versions, {v.version: v.metrics for v in listed}, params, rules=rules
    )


def current_registry() -> Registry:
    from oms.settings import get_settings

    settings = get_settings()
    return registry(settings.mlflow_tracking_uri, settings.mlflow_artifact_root)


@dataclass(frozen=True)
class ScoredModel:
    model_name: str
    model_version: str
    is_champion: bool  # the MLflow champion (False: the newest scores, the registry knows no champion)


def scored_model(url: str, *, registry_: Registry | None = None) -> ScoredModel | None:
    """The model version whose scores the pages show: the MLflow champion if it has scores here, else
    the version scored most recently (what `recoup score` wrote)."""
    versions = scored_versions(url)
    if versions.empty:
        return None
    champion = registry_.champion if registry_ is not None else None
    if champion is not None:
        match = versions[versions["model_version"] == champion]
        if len(match):
            return ScoredModel(match.iloc[0]["model_name"], champion, True)
    newest = versions.iloc[0]
    return ScoredModel(newest["model_name"], newest["model_version"], False)


# --- review queue --------------------------------------------------------------------------------


@st.cache_data(ttl=FAST, show_spinner=False)
def review_queue(url: str, model_name: str, model_version: str) -> pd.DataFrame:
    return queries.review_queue(engine(url), model_name, model_version)


@st.cache_data(ttl=FAST, show_spinner=False)
def return_detail(url: str, return_id: str, model_name: str, model_version: str) -> dict[str, Any]:
    return queries.return_detail(engine(url), return_id, model_name, model_version)


@st.cache_data(ttl=FAST, show_spinner=False)
def return_lines(url: str, return_id: str) -> pd.DataFrame:
    return queries.return_lines(engine(url), return_id)


@st.cache_data(ttl=FAST, show_spinner=False)
def reviews_of_return(url: str, return_id: str) -> pd.DataFrame:
    return queries.reviews_of_return(engine(url), return_id)


@st.cache_data(ttl=FAST, show_spinner=False)
def customer_timeline(url: str, customer_id: str) -> pd.DataFrame:
    return queries.customer_timeline(engine(url), customer_id)


@st.cache_data(ttl=FAST, show_spinner=False)
def linked_accounts(url: str, customer_id: str) -> pd.DataFrame:
    return queries.linked_accounts(engine(url), customer_id)


class DecisionRefused(Exception):
    """The decision was not recorded (already decided, conflicting change, unknown return)."""


def decide(
    url: str,
    return_id: str,
    analyst: str,
    outcome: str,
    *,
    fraud_type: str | None = None,
    note: str | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    """Record an analyst's decision through the lifecycle's domain service (the same one the API uses):
    the fraud_reviews row and the transition (or `reviewed` event) in one transaction."""
    from oms.lifecycle import LifecycleError, ReturnService
    from oms.uow import unit_of_work

    try:
        with unit_of_work(engine(url)) as session:
            service = ReturnService(session, current_policy())
            before = service.get(return_id).status
            review = service.decide(
                return_id, analyst, outcome, fraud_type=fraud_type, note=note or None, source=source
            )
            after = service.get(return_id).status
            result = {
                "return_id": return_id,
                "outcome": review.outcome,
                "reviewer": review.reviewer,
                "reviewed_at": review.reviewed_at,
                "status_before": before,
                "status_after": after,
            }
    except LifecycleError as exc:
        raise DecisionRefused(str(exc)) from exc
    finally:
        for loader in (review_queue, return_detail, reviews_of_return, customer_timeline, linked_accounts):
            loader.clear()
    return result


# --- analytics -----------------------------------------------------------------------------------


@st.cache_data(ttl=SLOW, show_spinner=False)
def analytics(
    url: str, name: str, where: str | None = None, params: tuple[tuple[str, Any], ...] = ()
) -> pd.DataFrame:
    return queries.analytics(engine(url), name, where, dict(params))


@st.cache_data(ttl=SLOW, show_spinner=False)
def reason_mix(url: str, dimension: str, value: str) -> pd.DataFrame:
    return queries.reason_mix(engine(url), dimension, value)


@st.cache_data(ttl=SLOW, show_spinner=False)
def size_mix(url: str, dimension: str, value: str) -> pd.DataFrame:
    return queries.size_mix(engine(url), dimension, value)


@st.cache_data(ttl=FAST, show_spinner=False)
def status_counts(url: str, location_id: str | None) -> pd.DataFrame:
    return queries.status_counts(engine(url), location_id)


# --- models --------------------------------------------------------------------------------------


@st.cache_data(ttl=SLOW, show_spinner=False)
def score_histogram(url: str, model_name: str, model_version: str) -> pd.DataFrame:
    return queries.score_histogram(engine(url), model_name, model_version)


@st.cache_data(ttl=SLOW, show_spinner=False)
def backtest_bins(url: str, model_name: str, model_version: str, since: pd.Timestamp | None) -> pd.DataFrame:
    return queries.backtest_bins(engine(url), model_name, model_version, since)


@st.cache_data(ttl=SLOW, show_spinner=False)
def returns_span(url: str) -> tuple[pd.Timestamp | None, pd.Timestamp | None, int]:
    return queries.returns_requested_between(engine(url))


@st.cache_data(ttl=3600, show_spinner=False, max_entries=4)
def feature_drift(
    url: str, reference_end: pd.Timestamp, recent_start: pd.Timestamp, recent_end: pd.Timestamp
) -> pd.DataFrame:
    """PSI of every fraud feature: returns requested before `reference_end` (the training period)
    against returns in [recent_start, recent_end). Recomputes the point-in-time features: slow on big
    histories, hence the long cache."""
    from features.offline import fraud_features

    features = fraud_features(engine(url))
    reference = features[features["requested_at"] < reference_end]
    recent = features[(features["requested_at"] >= recent_start) & (features["requested_at"] < recent_end)]
    return monitoring.feature_psi(reference, recent)


@st.cache_data(ttl=FAST, show_spinner=False)
def serving_log_recent(url: str) -> pd.DataFrame:
    return queries.serving_log_recent(engine(url))


@st.cache_data(ttl=FAST, show_spinner=False)
def serving_skew(url: str, model_name: str, model_version: str) -> pd.DataFrame:
    return queries.serving_skew(engine(url), model_name, model_version)


@st.cache_data(ttl=SLOW, show_spinner=False)
def feature_skew(url: str) -> pd.DataFrame:
    return queries.feature_skew(engine(url))
