"""Fixtures of the dashboard tests: one small simulated retailer (3k customers x 8 months), imported,
featured, with a fraud model trained and registered as champion in a session MLflow store, every return
scored and the analytics written; as a prepared SQLite file (copied per module) and as a PostgreSQL
database of the session. A few flagged returns are put back to `pending_review` so that a decision makes
a real transition. The app reads the database named by RECOUP_DATABASE_URL.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import streamlit as st
from sqlalchemy import Engine, bindparam, text
from sqlalchemy.engine import make_url

from dashboards.auth import User, hash_password
from features import analytics
from features.offline import fraud_features
from models import registry
from models.fraud import FraudModel, train_fraud
from models.scoring import score_frame, write_scores
from oms.db import make_engine
from oms.frames import load_frame
from oms.importer import import_directory
from oms.migrate import upgrade
from oms.policy import load_policy
from oms.settings import DEFAULT_POLICY_PATH, get_settings
from simulator.retailer import SimulationConfig, simulate
from tests.conftest import BACKENDS, _postgres_admin_url

CONFIG = SimulationConfig(customers=3_000, months=8, seed=5)
PENDING = 6
OPEN = 60
APP = Path(__file__).resolve().parents[2] / "dashboards" / "app.py"
PASSWORDS = {
    "ada": "ada-password",
    "alice": "alice-password",
    "bob": "bob-password",
    "mark": "mark-password",
    "olga": "olga-password",
}

ADMIN = User("ada", frozenset({"admin"}), "Ada", "password")
ALICE = User("alice", frozenset({"analyst"}), "Alice", "password")
BOB = User("bob", frozenset({"analyst"}), "Bob", "password")
MARK = User("mark", frozenset({"merchandiser"}), "Mark", "password")
OLGA = User("olga", frozenset({"operations"}), "Olga", "password")


@dataclass(frozen=True)
class World:
    retailer: Path
    sqlite_file: Path  # the populated SQLite database; each module works on a copy
    model: FraudModel  # registered: model.version is the champion's version
    features: pd.DataFrame
    scored: pd.DataFrame
    tables: dict[str, pd.DataFrame]
    mlflow_uri: str
    artifact_root: str
    pending: tuple[str, ...]  # flagged returns put back to pending_review
    users_file: Path


def populate(
    engine: Engine, world_model: FraudModel, scored: pd.DataFrame, tables: dict, pending: tuple
) -> None:
    """Scores, analytics and the pending returns, in an imported database; and, as a live retailer has
    them, returns still open: the latest `OPEN` flagged undecided ones wait to be received."""
    write_scores(engine, world_model, scored)
    analytics.write_all(engine, tables)
    with engine.begin() as connection:
        reviewed = {row[0] for row in connection.execute(text("SELECT return_id FROM fraud_reviews"))}
        flagged = scored[scored["decision"].isin(["review", "deny"])]["return_id"]
        open_ = [r for r in flagged if r not in reviewed and r not in set(pending)][-OPEN:]
        for status, ids in (("pending_review", list(pending)), ("authorized", open_)):
            connection.execute(
                text(
                    "UPDATE returns SET status = :status, received_at = NULL WHERE return_id IN :ids"
                ).bindparams(bindparam("ids", expanding=True)),
                {"status": status, "ids": ids},
            )


def _users_file(directory: Path) -> Path:
    path = directory / "users.toml"
    roles = {
        "ada": "admin",
        "alice": "analyst",
        "bob": "analyst",
        "mark": "merchandiser",
        "olga": "operations",
    }
    path.write_text(
        "\n".join(
            f'[users.{name}]\nroles = ["{roles[name]}"]\npassword_hash = "{hash_password(password)}"\n'
            for name, password in PASSWORDS.items()
        )
        + '\n[users.sso]\nroles = ["admin"]\nemail = "sso@example.com"\n'
    )
    return path


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> World:
    base = tmp_path_factory.mktemp("dashboards")
    simulate(CONFIG, base / "retailer")
    path = base / "world.db"
    shutil.copyfile(sqlite_template, path)
    engine = make_engine(f"sqlite:///{path}")
    import_directory(base / "retailer", engine)
    features = fraud_features(engine)
    reviews = load_frame(engine, "fraud_reviews", ["return_id", "reviewed_at", "outcome", "source"])
    result = train_fraud(features, reviews)
    mlflow_uri, artifact_root = f"sqlite:///{base / 'mlflow.db'}", str(base / "mlartifacts")
    registry.configure(mlflow_uri, artifact_root)
    version = registry.log_fraud_run(result, artifact_root=artifact_root)
    registry.promote(version, reason="dashboard tests")
    scored = score_frame(result.model, features, load_policy(DEFAULT_POLICY_PATH))
    tables = analytics.build_all(analytics.load_inputs(engine))
    # pending: flagged returns without any review, spread over the top of the queue
    reviewed = set(reviews["return_id"])
    flagged = scored[scored["band"].isin(["high", "critical"]) & ~scored["return_id"].isin(reviewed)]
    ranked = flagged.sort_values("score", ascending=False)["return_id"]
    heads = load_frame(engine, "returns", ["return_id", "order_id", "customer_id"])
    known = set(heads.loc[heads["customer_id"].notna() & heads["order_id"].notna(), "return_id"])
    with_history = ranked[ranked.isin(known)].head(PENDING // 2)  # a customer and an order to show
    pending = tuple(ranked[~ranked.isin(with_history)].head(PENDING - len(with_history))) + tuple(
        with_history
    )
    assert len(pending) == PENDING
    populate(engine, result.model, scored, tables, pending)
    engine.dispose()
    return World(
        base / "retailer",
        path,
        result.model,
        features,
        scored,
        tables,
        mlflow_uri,
        artifact_root,
        pending,
        _users_file(base),
    )


@pytest.fixture(scope="session")
def world_postgres(world: World) -> Iterator[str]:
    """The same world in a PostgreSQL database of its own (other suites truncate the shared one)."""
    admin_url = _postgres_admin_url()
    if admin_url is None:
        pytest.skip("PostgreSQL variant: set RECOUP_TEST_POSTGRES_URL to run it")
    name = f"recoup_dashboards_{os.getpid()}"
    admin = make_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    engine = make_engine(url)
    import_directory(world.retailer, engine)
    populate(engine, world.model, world.scored, world.tables, world.pending)
    engine.dispose()
    yield url
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="module", params=BACKENDS)
def dashboard_url(
    request: pytest.FixtureRequest, world: World, tmp_path_factory: pytest.TempPathFactory
) -> str:
    if request.param == "postgresql":
        return request.getfixturevalue("world_postgres")
    path = tmp_path_factory.mktemp("dashboard-db") / "recoup.db"
    shutil.copyfile(world.sqlite_file, path)
    return f"sqlite:///{path}"


@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch, dashboard_url: str, world: World) -> str:
    """Point the app at the test database, the session MLflow store and the test users file."""
    monkeypatch.setenv("RECOUP_DATABASE_URL", dashboard_url)
    monkeypatch.setenv("RECOUP_MLFLOW_TRACKING_URI", world.mlflow_uri)
    monkeypatch.setenv("RECOUP_MLFLOW_ARTIFACT_ROOT", world.artifact_root)
    monkeypatch.setenv("RECOUP_DASHBOARD_USERS", str(world.users_file))
    monkeypatch.delenv("RECOUP_DASHBOARD_AUTOLOGIN", raising=False)
    get_settings.cache_clear()
    st.cache_data.clear()
    return dashboard_url
