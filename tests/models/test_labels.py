"""The labels a real retailer has: late (the last months not decided yet), few (100 reviews), biased
(chosen by the rules). Training anchors its split on the labels, says in one line when they are too few,
and the retailer is served scores all the same: `recoup train` and `recoup score` end to end."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.offline import fraud_features
from models import registry
from models.evaluation import NotEnoughLabels, label_split
from models.fraud import POSITIVE, train_fraud
from models.rules import RulesScorer, fit_rules
from models.scoring import score_frame
from oms.db import make_engine
from oms.frames import load_frame
from oms.importer import import_directory
from oms.policy import load_policy
from oms.settings import DEFAULT_POLICY_PATH
from simulator.retailer import SimulationConfig, simulate
from tests.conftest import fresh_sqlite
from tests.recoup.test_cli import recoup

DAY = pd.Timedelta(days=1)


def _world(base: Path, sqlite_template: Path, config: SimulationConfig) -> dict:
    simulate(config, base / "retailer")
    url = fresh_sqlite(sqlite_template, base)
    engine = make_engine(url)
    import_directory(base / "retailer", engine)
    return {
        "url": url,
        "features": fraud_features(engine),
        "reviews": load_frame(engine, "fraud_reviews", ["return_id", "reviewed_at", "outcome", "source"]),
        "end": pd.Timestamp(config.end.isoformat(), tz="UTC"),
    }


@pytest.fixture(scope="module")
def late(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> dict:
    """Decisions of the last 4 months not known yet."""
    config = SimulationConfig(customers=5_000, months=12, seed=17, label_delay_days=120)
    return _world(tmp_path_factory.mktemp("late"), sqlite_template, config)


@pytest.fixture(scope="module")
def few(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> dict:
    """A small retailer with 100 reviews, a fifth of them the random audit."""
    config = SimulationConfig(customers=5_000, months=12, seed=23, review_budget=100, label_delay_days=30)
    return _world(tmp_path_factory.mktemp("few"), sqlite_template, config)


def test_training_with_the_last_four_months_unlabelled(late: dict) -> None:
    features, reviews, end = late["features"], late["reviews"], late["end"]
    assert reviews["reviewed_at"].max() < end - 119 * DAY  # nothing decided in the last 4 months
    result = train_fraud(features, reviews)
    split = result.split
    assert split.label_horizon == reviews[reviews["source"] != "chargeback"]["reviewed_at"].max()
    # the test window holds labels, and ends where the labels stop being mature
    assert split.test_end <= split.label_horizon - pd.Timedelta(days=split.label_delay_days)
    assert result.rows["test_labelled"] >= 20 and result.holdout["label"].nunique() == 2
    assert result.metrics["model_ipw_ap"] == result.metrics["model_ipw_ap"]  # a number, not NaN
    assert (
        result.metrics["model_ipw_ap_lo"]
        <= result.metrics["model_ipw_ap"]
        <= result.metrics["model_ipw_ap_hi"]
    )
    # nothing of the unlabelled months was trained or judged on
    assert result.latest_training_label <= split.label_horizon
    assert (result.population["requested_at"] < split.test_end).all()
    # ... and they are scored
    recent = features[features["requested_at"] >= end - 120 * DAY]
    scores = score_frame(result.model, recent, load_policy(DEFAULT_POLICY_PATH))["score"]
    assert len(recent) > 500 and scores.between(0.0, 1.0, inclusive="neither").all()
    assert scores.min() >= 0.001 and scores.max() <= 0.999  # never "impossible" nor "certain"


def test_too_few_labels_is_one_line_with_the_counts(few: dict) -> None:
    reviews = few["reviews"].sort_values("reviewed_at").head(40)
    with pytest.raises(NotEnoughLabels) as raised:
        label_split(few["features"], reviews, POSITIVE)
    message = str(raised.value)
    assert "\n" not in message
    assert re.search(
        r"training \d+ \(\d+ positive, \d+ negative\), test \d+ \(\d+ positive, \d+ negative\)", message
    )
    assert "labels known to" in message
    # the rules scorer still scores every return, with its prior weights when the labels are too few
    rules = fit_rules(few["features"], reviews.head(10))
    assert not rules.fitted
    scores = rules.predict(rules.matrix(few["features"]))
    assert scores.min() > 0 and scores.max() < 1 and len(np.unique(scores)) > 1


@pytest.mark.slow
def test_a_hundred_labels_through_recoup_train_and_score(few: dict, tmp_path: Path) -> None:
    """Whatever 100 labels allow, `recoup train` ends without an error and `recoup score` writes scores
    labelled with what served: a model that beat the rules with confidence, or the rules scorer."""
    assert 90 <= few["reviews"]["return_id"].nunique() <= 110
    env = {"RECOUP_DATABASE_URL": few["url"], "RECOUP_VAR_DIR": str(tmp_path / "var")}
    trained = recoup("train", env=env)
    assert trained.returncode == 0, trained.stderr
    assert "fraud scores: " in trained.stdout
    scored = recoup("score", env=env)
    assert scored.returncode == 0, scored.stderr
    versions = load_frame(make_engine(few["url"]), "return_scores", ["model_version", "score"])
    assert len(versions) == len(few["features"]) and versions["model_version"].nunique() == 1
    served = versions["model_version"].iloc[0]
    if served == "rules":
        assert "the rules scorer serves" in trained.stdout and "rules scorer" in scored.stdout
    else:
        assert f"version {served} serves" in trained.stdout
    assert versions["score"].astype(float).between(0.001, 0.999).all()


def test_with_too_few_labels_the_rules_scorer_serves_and_says_why(few: dict, tmp_path: Path) -> None:
    from models.training import train_fraud_or_rules

    registry.configure(f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "artifacts"))
    reviews = few["reviews"].sort_values("reviewed_at").head(40)
    outcome = train_fraud_or_rules(few["features"], reviews, capacity=0.02, artifact_root=str(tmp_path))
    assert outcome.version is None and not outcome.promoted
    assert outcome.reason.startswith("not enough labels to train a fraud model")
    serving = registry.load_serving()
    assert isinstance(serving, RulesScorer) and serving.version == "rules"
    assert serving.why == f"no fraud model is champion: {outcome.reason}"
    scored = score_frame(serving, few["features"], load_policy(DEFAULT_POLICY_PATH))
    flagged = scored[scored["score"] == scored["score"].max()].iloc[0]
    assert flagged["reasons"] and all(r["text"].startswith("Raises the risk: ") for r in flagged["reasons"])
