"""Fraud and recovery models on a small simulated retailer: quality against the legacy rules and the
truth, the champion gate, exact reason codes, and the MLflow registry on the embedded store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select

from features.offline import fraud_features, line_features
from models import registry
from models.evaluation import label_split
from models.fraud import POSITIVE, challenger_wins, train_fraud
from models.recovery import RecoveryChooser, regret_against_truth, train_recovery
from models.scoring import score_frame, write_scores
from models.training import fraud_challenger, gate_fraud
from oms.db import make_engine
from oms.disposition import ReturnedItem
from oms.frames import load_frame
from oms.importer import import_directory
from oms.policy import load_policy
from oms.settings import DEFAULT_POLICY_PATH, get_settings
from oms.tables import ReturnScore
from simulator.retailer import SimulationConfig, simulate
from tests.conftest import fresh_sqlite


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path):
    base = tmp_path_factory.mktemp("models")
    simulate(SimulationConfig(customers=12_000, months=12, seed=3), base / "retailer")
    engine = make_engine(fresh_sqlite(sqlite_template, base))
    import_directory(base / "retailer", engine)
    return {
        "engine": engine,
        "features": fraud_features(engine),
        "reviews": load_frame(engine, "fraud_reviews"),
        "lines": line_features(engine),
        "truth": pd.read_csv(base / "retailer" / "_truth" / "return_line_values.csv"),
        "truth_returns": pd.read_csv(base / "retailer" / "_truth" / "returns.csv"),
    }


@pytest.fixture
def mlflow_store() -> str:
    settings = get_settings()  # RECOUP_VAR_DIR is the test's own tmp dir
    registry.configure(settings.mlflow_tracking_uri, settings.mlflow_artifact_root)
    return settings.mlflow_artifact_root


def test_fraud_model_trains_fast_and_beats_the_rules(world) -> None:
    result = train_fraud(world["features"], world["reviews"])
    metrics = result.metrics
    assert metrics["model_reviews_average_precision"] > 1.5 * metrics["rules_reviews_average_precision"]
    assert metrics["model_reviews_roc_auc"] > 0.8
    # against the truth, on every test-period return (not only the reviewed ones)
    truth = world["truth_returns"].set_index("return_id")["label"] != "legitimate"
    population = result.population
    from sklearn.metrics import average_precision_score

    labels = truth.reindex(population["return_id"]).to_numpy()
    assert average_precision_score(labels, population["model_score"]) > 1.5 * average_precision_score(
        labels, population["rules_score"]
    )


def test_scores_are_probabilities_over_every_return_and_the_queue_fits_the_team(world) -> None:
    """Calibrated on the population, not on the reviews the rules chose: the mean score over every test
    return is the true fraud share; the policy's decisions hold 0.5x-2x the review capacity for review."""
    policy = load_policy(DEFAULT_POLICY_PATH)
    fraud = policy.fraud
    result = train_fraud(
        world["features"],
        world["reviews"],
        capacity=fraud.review_capacity,
        review_threshold=fraud.review_threshold,
        deny_threshold=fraud.deny_threshold,
    )
    population, model = result.population, result.model
    truth = world["truth_returns"].set_index("return_id")["label"] != "legitimate"
    share = truth.reindex(population["return_id"]).mean()
    scores = model.predict(model.matrix(population))
    assert abs(scores.mean() - share) < 0.35 * share, (scores.mean(), share)
    # the reviews alone are far richer in fraud than the returns: a fit on them would be far too high
    assert result.holdout["label"].mean() > 1.5 * share
    metrics = result.metrics
    assert 0.5 <= metrics["queue_capacity_ratio"] <= 2.0, metrics
    assert metrics["queue_per_day"] == pytest.approx(metrics["queue_share"] * metrics["returns_per_day"])
    # what the API and the batch decide on the latest returns: held for review from the model's cut,
    # denied from the threshold
    features = world["features"]
    as_of = features["requested_at"].max() + pd.Timedelta(seconds=1)  # train_fraud's default
    recent = features[features["requested_at"] >= as_of - pd.Timedelta(days=120)]
    decided = score_frame(model, recent, policy)["decision"]
    held = (decided == "review").mean()
    assert 0.5 * fraud.review_capacity <= held <= 2.0 * fraud.review_capacity, held
    assert held == pytest.approx(metrics["queue_share"])
    assert (decided == "deny").mean() == pytest.approx(metrics["deny_share"])
    assert model.review_from(fraud) >= fraud.review_threshold


def test_training_set_holds_no_review_decided_after_the_cutoff(world) -> None:
    result = train_fraud(world["features"], world["reviews"])
    assert result.latest_training_label is not None
    assert result.latest_training_label < result.split.train_labels_until
    split = result.split
    assert split.train_end <= split.test_start < split.test_end
    assert split.test_end == split.label_horizon - pd.Timedelta(days=split.label_delay_days)
    assert (result.holdout["requested_at"] >= split.test_start).all()
    assert (result.holdout["requested_at"] < split.test_end).all()
    assert (result.holdout["source"] != "chargeback").all()  # judged only on what the rules or audit chose


def test_reason_codes_reproduce_the_raw_score(world) -> None:
    model = train_fraud(world["features"], world["reviews"]).model
    sample = world["features"].sample(200, random_state=1)
    matrix = model.matrix(sample)
    contributions = model.contributions(matrix)
    assert np.allclose(contributions.sum(axis=1), model.raw(matrix), atol=1e-9)
    scored = score_frame(model, sample, load_policy(DEFAULT_POLICY_PATH))
    reasons = scored["reasons"].iloc[int(np.argmax(scored["score"].to_numpy()))]
    assert reasons and all(
        r["contribution"] > 0 and isinstance(r["text"], str) and r["text"] for r in reasons
    )
    assert reasons == sorted(reasons, key=lambda r: -r["contribution"])


def test_gate_refuses_a_worse_challenger_and_keeps_the_champion(world, mlflow_store: str) -> None:
    # the champion was trained four months ago: on the returns and the decisions known then
    features, reviews = world["features"], world["reviews"]
    then = features["requested_at"].max() - pd.Timedelta(days=120)
    first, version = fraud_challenger(
        features[features["requested_at"] < then],
        reviews[reviews["reviewed_at"] < then],
        capacity=0.02,
        artifact_root=mlflow_store,
    )
    assert gate_fraud(first, version).promoted
    assert registry.champion_version() == version
    assert registry.load_fraud().trained_until == first.split.test_end  # refit on every mature label
    # a worse challenger now: trained on shuffled labels (the test window's labels stay true)
    split = label_split(features, reviews, POSITIVE)
    requested = features.set_index("return_id")["requested_at"]
    shuffled = reviews.copy()
    early = (shuffled["return_id"].map(requested) < split.test_start).to_numpy()
    shuffled.loc[early, "outcome"] = (
        shuffled.loc[early, "outcome"].sample(frac=1.0, random_state=0).to_numpy()
    )
    worse, worse_version = fraud_challenger(features, shuffled, capacity=0.02, artifact_root=mlflow_store)
    outcome = gate_fraud(worse, worse_version)
    assert not outcome.promoted and "does not beat the champion" in outcome.reason
    # judged only on test returns the champion never learned from
    assert 20 <= worse.metrics["champion_unseen_labelled"] <= worse.rows["test_labelled"]
    assert worse.metrics["champion_ipw_ap"] > worse.metrics["challenger_ipw_ap"]
    assert registry.champion_version() == version
    # a proper challenger with four more months of labels
    better, better_version = fraud_challenger(features, reviews, capacity=0.02, artifact_root=mlflow_store)
    assert better.metrics["challenger_ipw_ap_lo"] <= better.metrics["challenger_ipw_ap"]
    promoted = gate_fraud(better, better_version)
    assert promoted.promoted == (better.metrics["challenger_minus_champion_lo"] > 0), promoted.reason
    registry.promote(better_version, reason="test: the champion of today's data")
    current = registry.champion_version()
    # the same data again: the champion has learned from every label of its test window, no evidence
    again, again_version = fraud_challenger(features, reviews, capacity=0.02, artifact_root=mlflow_store)
    refused = gate_fraud(again, again_version)
    assert not refused.promoted and "too few to judge" in refused.reason, refused.reason
    assert registry.champion_version() == current
    wins, _ = challenger_wins(
        {
            "model_reviews_average_precision": 0.5,
            "champion_reviews_average_precision": 0.5,
            "rules_reviews_average_precision": 0.1,
        }
    )
    assert not wins  # a tie does not move the champion (older runs without intervals)


def test_gate_promotes_only_with_confidence() -> None:
    """The challenger's lead over the champion (or over the rules with no champion) must be above 0 over
    the whole interval; an interval that overlaps the champion's is refused, whatever the point estimate."""
    first = {
        "model_ipw_ap": 0.80,
        "model_ipw_ap_lo": 0.70,
        "model_ipw_ap_hi": 0.88,
        "rules_ipw_ap": 0.30,
        "rules_ipw_ap_lo": 0.22,
        "rules_ipw_ap_hi": 0.39,
    }
    against = {
        **first,
        "champion_unseen_labelled": 120.0,
        "challenger_ipw_ap": 0.80,
        "challenger_ipw_ap_lo": 0.70,
        "challenger_ipw_ap_hi": 0.88,
        "champion_ipw_ap": 0.72,
        "champion_ipw_ap_lo": 0.62,
        "champion_ipw_ap_hi": 0.81,
    }
    overlapping = {**against, "challenger_minus_champion_lo": -0.02, "challenger_minus_champion_hi": 0.17}
    wins, reason = challenger_wins(overlapping)
    assert not wins and "does not beat the champion with confidence" in reason and "0.800" in reason
    confident = {**against, "challenger_minus_champion_lo": 0.01, "challenger_minus_champion_hi": 0.15}
    wins, reason = challenger_wins(confident)
    assert wins and "better with confidence" in reason
    # a champion but no returns it has not learned from: refused, even with a clear lead over the rules
    unseen = {
        **first,
        "champion_unseen_labelled": 4.0,
        "model_minus_rules_lo": 0.3,
        "model_minus_rules_hi": 0.6,
    }
    assert not challenger_wins(unseen)[0]
    # no champion: judged against the rules scorer
    assert challenger_wins({**first, "model_minus_rules_lo": 0.3, "model_minus_rules_hi": 0.6})[0]
    assert not challenger_wins({**first, "model_minus_rules_lo": -0.05, "model_minus_rules_hi": 0.6})[0]


def test_registry_on_the_embedded_store(world, mlflow_store: str) -> None:
    _, version = fraud_challenger(
        world["features"], world["reviews"], capacity=0.02, artifact_root=mlflow_store
    )
    assert (
        get_settings().mlflow_tracking_uri.startswith("sqlite:///")
        and str(get_settings().var_dir) in get_settings().mlflow_tracking_uri
    )
    registry.promote(version, reason="test")
    second, second_version = fraud_challenger(
        world["features"], world["reviews"], capacity=0.02, artifact_root=mlflow_store
    )
    registry.promote(second_version, reason="test")
    loaded = registry.load_fraud()
    assert loaded.version == second_version
    sample = world["features"].head(50)
    assert np.allclose(
        loaded.predict(loaded.matrix(sample)), second.model.predict(second.model.matrix(sample))
    )
    assert registry.rollback() == version and registry.champion_version() == version
    listed = {item.version: item for item in registry.versions()}
    assert (
        "champion" in listed[version].aliases and "model_reviews_average_precision" in listed[version].metrics
    )
    run = registry.MlflowClient().get_run(registry.version_tag(version, "run_id"))
    assert run.data.tags["feature_set"] == "FRAUD_FEATURES_V1" and run.data.tags["git_commit"]
    artifacts = {a.path for a in registry.MlflowClient().list_artifacts(run.info.run_id, "plots")}
    assert {
        "plots/pr_curve.png",
        "plots/calibration.png",
        "plots/feature_importance.png",
        "plots/contribution_summary.png",
    } <= artifacts


def test_batch_scores_cover_every_return(world) -> None:
    model = train_fraud(world["features"], world["reviews"]).model
    model.version = "test"
    policy = load_policy(DEFAULT_POLICY_PATH)
    scored = score_frame(model, world["features"], policy)
    assert write_scores(world["engine"], model, scored) == len(world["features"])
    with world["engine"].connect() as connection:
        stored = connection.execute(
            select(func.count()).select_from(ReturnScore).where(ReturnScore.model_version == "test")
        ).scalar_one()
    assert stored == len(world["features"])
    assert set(scored["decision"]) <= {"approve", "review", "deny"}


def test_recovery_routing_beats_the_static_table(world) -> None:
    result = train_recovery(world["lines"])
    against_truth = regret_against_truth(result.test, world["truth"])
    assert against_truth["model_share_of_oracle"] > against_truth["static_share_of_oracle"]
    assert against_truth["model_share_of_oracle"] > 0.9
    chooser = RecoveryChooser(result.model)
    row = result.test.iloc[0]
    item = ReturnedItem(
        sku="x",
        category=row["category"],
        brand=row["brand"],
        condition="used",
        reason=row["reason"],
        quantity=1,
        unit_price=row["unit_price"],
        unit_cost=row["unit_cost"],
        location_id=None,
        list_price=row["list_price"],
        location_kind=row["location_kind"],
    )
    choice = chooser.choose(item)
    assert (
        choice.disposition in ("refurbish", "liquidate", "donate", "recycle")
        and choice.chooser == "recovery_model"
    )


def test_reason_sentences_of_known_cases() -> None:
    """Each sentence says which way it pushes; a typical value is that of comparable returns, and is left
    out where it says nothing (yes/no facts)."""
    from models.explain import DOWN, reason_codes, sentence, typical_by_group

    assert (
        sentence("cust_returns_30d", 7, 0, comparable="store returns of apparel")
        == "Raises the risk: 7 returns by the customer in the last 30 days (typical of store returns of apparel: 0)"
    )
    assert sentence("receiptless", 1, 0.0) == "Raises the risk: returned without a receipt"
    assert (
        sentence("reason_doesnt_fit_share", 0.0, 1.0, direction=DOWN, comparable="mail returns of apparel")
        == "Lowers the risk: share of returned lines: doesn't fit: 0% (typical of mail returns of apparel: 100%)"
    )
    assert sentence("customer_tenure_days", float("nan"), 300) == (
        "Raises the risk: no customer history to go on (guest or new account)"
    )
    # comparable returns: store apparel returns are compared with store apparel returns
    names = [
        "return_value",
        "cust_returns_30d",
        "return_channel_store",
        "return_channel_mail",
        "return_channel_online",
        "electronics_share",
        "apparel_share",
    ]
    frame = pd.DataFrame(
        {
            "return_value": [40.0] * 60 + [900.0] * 60,
            "cust_returns_30d": [0.0] * 120,
            "return_channel_store": [1] * 60 + [0] * 60,
            "return_channel_mail": [0] * 60 + [1] * 60,
            "return_channel_online": [0] * 120,
            "electronics_share": [0.0] * 60 + [1.0] * 60,
            "apparel_share": [1.0] * 60 + [0.0] * 60,
        }
    )
    groups = typical_by_group(frame, names)
    assert (
        groups["store|apparel"]["return_value"] == 40.0
        and groups["mail|electronics"]["return_value"] == 900.0
    )
    assert groups[""]["return_value"] == 470.0
    row = np.array([400.0, 3.0, 1, 0, 0, 0.0, 1.0])
    contributions = np.array([0.9, 0.4, -0.2, 0.0, 0.0, 0.0, -0.6, -2.0])  # last: the base value
    up = reason_codes(names, row, contributions, groups[""], by_group=groups)
    assert [r["feature"] for r in up] == ["return_value", "cust_returns_30d"]  # only what pushes up
    assert (
        up[0]["text"] == "Raises the risk: a return worth 400.00 (typical of store returns of apparel: 40.00)"
    )
    assert up[0]["typical"] == 40.0 and up[0]["direction"] == "up"
    down = reason_codes(names, row, contributions, groups[""], direction=DOWN, by_group=groups)
    assert [r["feature"] for r in down] == ["apparel_share", "return_channel_store"]
    assert all(r["text"].startswith("Lowers the risk: ") and r["contribution"] < 0 for r in down)
    # a group too small to have its own medians: compared with all returns, and said so
    lonely = reason_codes(
        names, np.array([400.0, 3.0, 0, 0, 1, 0.0, 0.0]), contributions, groups[""], by_group=groups
    )
    assert lonely[0]["text"].endswith("(typical of all returns: 470.00)")
