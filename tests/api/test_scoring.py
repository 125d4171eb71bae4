"""Scoring over real HTTP: the contract, degraded mode, hot swap under load, and the serving log."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, make_url, select

from api.scoring import ModelHolder, registry_loader
from api.serving_log import ServingLogWriter
from api.state import AppState
from features.offline import fraud_features, line_features, write_product_snapshots
from features.skew import serving_skew
from models import registry
from models.fraud import train_fraud
from models.recovery import train_recovery
from models.rules import fit_rules
from oms.apikeys import create_key
from oms.db import make_engine
from oms.frames import load_frame
from oms.importer import import_directory
from oms.policy import load_policy
from oms.settings import DEFAULT_POLICY_PATH
from oms.tables import Return, ServingLog
from oms.uow import unit_of_work
from simulator.retailer import SimulationConfig, simulate
from tests.conftest import fresh_sqlite, truncate

NOW = dt.datetime(2024, 11, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> dict:
    base = tmp_path_factory.mktemp("scoring")
    simulate(SimulationConfig(customers=5_000, months=10, seed=21), base / "retailer")
    url = fresh_sqlite(sqlite_template, base)
    engine = make_engine(url)
    import_directory(base / "retailer", engine)
    write_product_snapshots(engine)
    features = fraud_features(engine)
    reviews = load_frame(engine, "fraud_reviews")
    fraud = train_fraud(features, reviews).model
    fraud.version = "1"
    other = train_fraud(features, reviews, params={"num_leaves": 7, "learning_rate": 0.1}).model
    other.version = "2"
    recovery = train_recovery(line_features(engine)).model
    recovery.version = "1"
    orders = load_frame(engine, "orders", ["order_id", "customer_id", "channel", "placed_at"])
    returned = set(load_frame(engine, "returns", ["order_id"])["order_id"].dropna())
    recent = orders[
        (orders["placed_at"] > pd.Timestamp(NOW) - pd.Timedelta(days=10))
        & orders["customer_id"].notna()
        & ~orders["order_id"].isin(returned)
    ]
    return {
        "retailer": base / "retailer",
        "url": url,
        "engine": engine,
        "fraud": fraud,
        "other": other,
        "recovery": recovery,
        "orders": recent,
    }


def _scoring_state(engine, trained: dict) -> tuple[str, AppState]:
    """A till's API key on `engine`, and an API state scoring there with the trained champions."""
    with unit_of_work(engine) as session:
        key = create_key(session, "till", ["returns:read", "returns:write"])
    holder = ModelHolder(lambda: (trained["fraud"], trained["recovery"]), interval=3600)
    holder.refresh()
    state = AppState(
        engine=engine,
        policy=load_policy(DEFAULT_POLICY_PATH),
        clock=lambda: NOW,
        models=holder,
        serving_log=ServingLogWriter(engine, interval=0.05),
    )
    return key, state


@pytest.fixture
def scoring_api(live_server, trained: dict):
    key, state = _scoring_state(trained["engine"], trained)
    live_server.app.state.recoup = state
    with httpx.Client(
        base_url=live_server.url, timeout=30, headers={"Authorization": f"Bearer {key}"}
    ) as client:
        yield client, state
    state.serving_log.close()
    live_server.app.state.recoup = None


def _body(trained: dict, index: int = 0, channel: str = "mail") -> dict:
    order = trained["orders"].iloc[index]
    return {
        "channel": channel,
        "order_id": order["order_id"],
        "location_id": "RC1",
        "lines": [{"order_line_no": 1, "quantity": 1, "reason": "changed_mind"}],
    }


def test_score_contract_and_no_side_effects(scoring_api, trained: dict) -> None:
    client, _ = scoring_api
    with trained["engine"].connect() as connection:
        before = connection.execute(select(func.count()).select_from(Return)).scalar_one()
    response = client.post("/v1/returns/score", json=_body(trained))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["degraded"] is False and body["model_version"] == "1"
    assert 0.0 <= body["score"] <= 1.0 and body["band"] in ("low", "elevated", "high", "critical")
    assert body["decision"] in ("approve", "review", "deny")
    assert 0.0 < body["score"] < 1.0  # never "impossible" nor "certain"
    if body["decision"] == "approve":  # what raises the risk is said only for a flagged return
        assert body["model_reasons"] == []
        asked = client.post("/v1/returns/score?explain_approved=true", json=_body(trained)).json()
        assert asked["model_reasons"] and all(
            r["direction"] == "down" and r["text"].startswith("Lowers the risk: ") and r["contribution"] < 0
            for r in asked["model_reasons"]
        )
    else:
        assert body["model_reasons"] and all(
            r["direction"] == "up" and r["text"].startswith("Raises the risk: ") and r["contribution"] > 0
            for r in body["model_reasons"]
        )
    line = body["lines"][0]
    assert line["recommended_disposition"] in (
        "restock",
        "open_box",
        "liquidate",
        "return_to_vendor",
        "donate",
        "recycle",
    )
    assert line["refund_estimate"] > 0 and line["condition_assumed"] == "new"
    with trained["engine"].connect() as connection:
        assert connection.execute(select(func.count()).select_from(Return)).scalar_one() == before
    # the same request through return creation carries the same score
    created = client.post("/v1/returns", json=_body(trained)).json()
    assert created["score"] == pytest.approx(body["score"]) and created["model_version"] == "1"


def test_policy_violations_come_first(scoring_api, trained: dict) -> None:
    client, _ = scoring_api
    old = load_frame(trained["engine"], "orders", ["order_id", "placed_at"]).sort_values("placed_at").iloc[0]
    body = {
        "channel": "mail",
        "order_id": old["order_id"],
        "lines": [{"order_line_no": 1, "quantity": 1, "reason": "changed_mind"}],
    }
    answer = client.post("/v1/returns/score", json=body).json()
    assert answer["decision"] == "deny" and answer["reasons"][0]["code"] == "outside_window"
    assert answer["score"] is not None


def test_degraded_without_a_model_and_with_a_broken_one(scoring_api, trained: dict) -> None:
    client, state = scoring_api
    state.models = ModelHolder(lambda: (None, None))
    state.models.refresh()
    answer = client.post("/v1/returns/score", json=_body(trained, 2))
    assert answer.status_code == 200 and answer.json()["degraded"] is True and answer.json()["score"] is None
    assert answer.json()["decision"] in ("approve", "review", "deny")
    broken = train_fraud.__globals__["FraudModel"](
        booster=trained["fraud"].booster,
        feature_set="FRAUD_FEATURES_V1",
        features=trained["fraud"].features[:-3],  # wrong width: the booster refuses the row
        calibration_x=trained["fraud"].calibration_x,
        calibration_y=trained["fraud"].calibration_y,
        typical={},
        version="broken",
    )
    state.models = ModelHolder(lambda: (broken, None))
    state.models.refresh()
    answer = client.post("/v1/returns/score", json=_body(trained, 2))
    assert answer.status_code == 200 and answer.json()["degraded"] is True
    created = client.post("/v1/returns", json=_body(trained, 1))
    assert created.status_code == 201 and created.json()["degraded"] is True


def test_without_a_champion_the_rules_scorer_serves_until_a_model_is_promoted(
    scoring_api, trained: dict, tmp_path: Path
) -> None:
    client, state = scoring_api
    uri, artifacts = f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "artifacts")
    registry.configure(uri, artifacts)
    features = fraud_features(trained["engine"])
    reviews = load_frame(trained["engine"], "fraud_reviews")
    rules = fit_rules(features, reviews, why="no fraud model is champion: the first challenger lost")
    assert rules.fitted and rules.labels > 100
    registry.save_rules(rules)
    state.models = ModelHolder(registry_loader(uri, artifacts), interval=3600)
    state.models.refresh()
    answers = [client.post("/v1/returns/score", json=_body(trained, i)) for i in range(60, 65)]
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    bodies = [a.json() for a in answers]
    for body in bodies:
        assert body["degraded"] is False and body["model_version"] == "rules"
        assert body["serving_because"] == rules.why
        assert 0.0 < body["score"] < 1.0 and body["band"] is not None
    # a receiptless return worth more than 400 hits two rules or more: it scores above the ones before
    sku = load_frame(trained["engine"], "products", ["sku", "list_price"]).sort_values("list_price").iloc[-1]
    risky = {
        "channel": "store",
        "location_id": "S001",
        "refund_method": "cash",
        "lines": [{"sku": sku["sku"], "quantity": 2, "reason": "changed_mind"}],
    }
    answer = client.post("/v1/returns/score", json=risky)
    assert answer.status_code == 200, answer.text
    assert answer.json()["score"] > min(b["score"] for b in bodies)
    # a model promoted: the next refresh serves it
    result = train_fraud(features, reviews)
    version = registry.log_fraud_run(result, artifact_root=artifacts)
    registry.promote(version, reason="test")
    state.models.refresh()
    body = client.post("/v1/returns/score", json=_body(trained, 65)).json()
    assert body["model_version"] == version and body["serving_because"] is None and not body["degraded"]


def test_hot_swap_under_concurrent_requests(scoring_api, trained: dict, live_server) -> None:
    client, state = scoring_api
    current = {"fraud": trained["fraud"]}
    state.models = ModelHolder(lambda: (current["fraud"], trained["recovery"]))
    state.models.refresh()
    seen: list[tuple[float, str, int]] = []
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=live_server.url, timeout=30, headers=client.headers) as own:
            index = 0
            while not stop.is_set():
                response = own.post("/v1/returns/score", json=_body(trained, 30 + index % 20))
                seen.append(
                    (
                        time.monotonic(),
                        response.json().get("model_version") if response.status_code == 200 else None,
                        response.status_code,
                    )
                )
                index += 1

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    current["fraud"] = trained["other"]
    swapped_at = time.monotonic()
    state.models.refresh()
    time.sleep(1.0)
    stop.set()
    for thread in threads:
        thread.join()
    assert seen and all(code == 200 for _, _, code in seen)
    assert {version for _, version, _ in seen} == {"1", "2"}
    late = [version for moment, version, _ in seen if moment > swapped_at + 0.2]
    assert late and set(late) == {"2"}


def test_serving_log_and_skew(scoring_api, trained: dict) -> None:
    client, state = scoring_api
    for index in range(5):
        assert client.post("/v1/returns", json=_body(trained, 10 + index)).status_code == 201
    client.post("/v1/returns/score", json=_body(trained, 20))
    state.serving_log.close()
    with unit_of_work(trained["engine"], write=False) as session:
        rows = session.execute(select(ServingLog)).scalars().all()
    logged = [r for r in rows if r.model_version == "1"]
    assert len(logged) >= 6 and all(
        r.latency_ms > 0 and len(r.features) == len(trained["fraud"].features) for r in logged
    )
    assert sum(r.return_id is not None for r in logged) >= 5
    skew = serving_skew(trained["engine"])
    assert len(skew) == len(trained["fraud"].features)
    assert skew["compared"].max() >= 5
    assert skew["mismatched"].sum() == 0, skew[skew["mismatched"] > 0]
    assert np.all(skew["max_abs_difference"] < 1e-6)


def _clone_order(db: sqlite3.Connection, order_id: str, new_id: str) -> None:
    """A copy of an order, its lines and its tenders under another id."""
    for table, key in (("orders", "order_id"), ("order_lines", "order_id"), ("payments", "order_id")):
        columns = [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
        values = [
            "? AS order_id" if c == key else ("payment_id || '-copy'" if c == "payment_id" else c)
            for c in columns
        ]
        db.execute(
            f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(values)} FROM {table} WHERE {key} = ?",
            (new_id, order_id),
        )


def test_scores_read_the_scoring_database_and_fall_back_to_the_state_database(
    scoring_api, trained: dict, tmp_path: Path
) -> None:
    """With a scoring database (`RECOUP_SCORING_DATABASE_URL`: a replica, say), scores read there; what
    it does not know yet, and everything when it fails (for a rest after it failed), is read from the
    state database; what they serve is logged in the state database."""
    client, state = scoring_api
    # the "replica": a copy of the state database with an order the state database lacks, and without
    # one it has (a replica behind its primary)
    replica = tmp_path / "replica.db"
    source = sqlite3.connect(trained["url"].removeprefix("sqlite:///"))
    target = sqlite3.connect(replica)
    with target:
        source.backup(target)
        target.execute("PRAGMA foreign_keys = OFF")
        _clone_order(target, _body(trained, 30)["order_id"], "O-REPLICA-ONLY")
        target.execute("DELETE FROM orders WHERE order_id = ?", (_body(trained, 31)["order_id"],))
    source.close()
    target.close()
    only_replica = {**_body(trained, 30), "order_id": "O-REPLICA-ONLY"}
    state.serving_log.close()  # from here the test drains the serving log itself
    with unit_of_work(trained["engine"], write=False) as session:
        logged_before = session.execute(select(func.count()).select_from(ServingLog)).scalar_one()
    not_a_database = tmp_path / "broken.db"
    not_a_database.write_bytes(b"this is not a database" * 100)
    state.read_engine = make_engine(f"sqlite:///{replica}")
    try:
        served = client.post("/v1/returns/score", json=only_replica)  # only the replica has the order
        assert served.status_code == 200 and served.json()["model_version"] == "1", served.text
        behind = client.post("/v1/returns/score", json=_body(trained, 31))  # only the state database has it
        assert behind.status_code == 200, behind.text
        assert client.post("/v1/returns/score", json={**only_replica, "order_id": "NOPE"}).status_code == 422
        state.read_engine.dispose()
        state.read_engine = make_engine(f"sqlite:///{not_a_database}")
        failed_over = client.post("/v1/returns/score", json=_body(trained, 32))  # the replica fails
        assert failed_over.status_code == 200, failed_over.text
        # a failed replica rests: even back in working order, it is not read until its rest is over
        state.read_engine.dispose()
        state.read_engine = make_engine(f"sqlite:///{replica}")
        assert client.post("/v1/returns/score", json=only_replica).status_code == 422
        state.read_engine_failed_at = -float("inf")
        assert client.post("/v1/returns/score", json=only_replica).status_code == 200
    finally:
        state.read_engine.dispose()
        state.read_engine = None
    # without the replica, the order only it has is unknown: the first score did read the replica
    missing = client.post("/v1/returns/score", json=only_replica)
    assert missing.status_code == 422 and "does not exist" in missing.text
    while state.serving_log.flush():
        pass
    with unit_of_work(trained["engine"], write=False) as session:
        logged = session.execute(select(func.count()).select_from(ServingLog)).scalar_one()
    assert logged - logged_before == 4  # each served score once, in the state database


def test_concurrent_scores_are_batched_with_the_same_answers(scoring_api, trained: dict, live_server) -> None:
    """Scores arriving together are served in one batch (one transaction, one feature computation);
    each answer is the one it gets alone, and an invalid request fails alone."""
    client, state = scoring_api
    bodies = [_body(trained, 40 + index) for index in range(8)]
    bodies.append(bodies[0])  # the same customer twice in one batch
    invalid = {**_body(trained, 48), "order_id": "NO-SUCH-ORDER"}
    alone = [client.post("/v1/returns/score", json=body).json() for body in bodies]
    assert client.post("/v1/returns/score", json=invalid).status_code == 422
    state.score_batch_wait = 0.3  # while busy, a batch waits 0.3 s for company: all of these join it
    state.batchers.clear()
    client.post("/v1/returns/score", json=bodies[0])  # the server is busy from now on
    answers: dict[int, httpx.Response] = {}
    gate = threading.Barrier(len(bodies) + 1)

    def send(index: int, body: dict) -> None:
        with httpx.Client(base_url=live_server.url, timeout=30, headers=client.headers) as own:
            gate.wait()
            answers[index] = own.post("/v1/returns/score", json=body)

    threads = [threading.Thread(target=send, args=item) for item in enumerate([*bodies, invalid])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batcher = state.batchers["score"]
    assert batcher.largest >= 3, (batcher.batches, batcher.items, batcher.largest)
    status = client.get("/v1/status").json()
    assert status["models"] == {"fraud": "1", "recovery": "1", "load_error": None}
    assert status["scoring"]["largest_batch"] == batcher.largest
    assert status["scoring"]["scores"] == batcher.items == len(bodies) + 2  # and the one that woke it
    assert answers[len(bodies)].status_code == 422 and "NO-SUCH-ORDER" in answers[len(bodies)].text
    for index, expected in enumerate(alone):
        got = answers[index]
        assert got.status_code == 200, got.text
        got = got.json()
        assert got["score"] == pytest.approx(expected["score"], abs=1e-12), index
        for field in ("decision", "band", "model_version", "degraded", "reasons", "model_reasons", "lines"):
            assert got[field] == expected[field], (index, field)


def test_a_request_that_breaks_the_batch_degrades_alone(trained: dict) -> None:
    """If one request's inputs cannot be computed, the batch is scored again request by request: that one
    gets the policy decision flagged degraded, the others the scores they get alone."""
    from api.schemas import ReturnCreate
    from api.score_requests import create_request as _create_request
    from api.scoring import ModelScorer
    from oms.lifecycle import ReturnService

    holder = ModelHolder(lambda: (trained["fraud"], trained["recovery"]), interval=3600)
    holder.refresh()
    policy = load_policy(DEFAULT_POLICY_PATH)
    creates = [_create_request(ReturnCreate(**_body(trained, 60 + index))) for index in range(3)]
    with unit_of_work(trained["engine"], write=False) as session:
        scorer = ModelScorer(holder, policy)
        service = ReturnService(session, policy, now=lambda: NOW, scorer=scorer)
        contexts = service.contexts(creates)
        alone = [
            service.assess(create, context).score for create, context in zip(creates, contexts, strict=True)
        ]
        contexts[1].scorer_rows = contexts[1].scorer_rows[:2]  # its feature reads came back short
        together = service.assess_many(list(zip(creates, contexts, strict=True)))
    assert [a.degraded for a in together] == [False, True, False]
    assert together[0].score == alone[0] and together[2].score == alone[2]
    assert together[1].score is None and together[1].decision in ("approve", "review", "deny")
    assert [len(one.lines) for one in scorer.scored] == [1, 0, 1]


def test_scores_on_postgresql_through_the_drivers_own_pipeline(
    trained: dict, live_server, postgres_url: str
) -> None:
    """On PostgreSQL, scores read through the scoring engine (`make_engine(driver_prepares=True)`: the
    driver's own pipeline on libpq and its own prepared statements) answer exactly as through psycopg's
    cursors, alone and batched, and as return creation scores the same request."""
    truncate(postgres_url)
    engine = make_engine(postgres_url)
    import_directory(trained["retailer"], engine)
    write_product_snapshots(engine)
    scoring = make_engine(postgres_url, driver_prepares=True)
    key, state = _scoring_state(engine, trained)
    live_server.app.state.recoup = state
    headers = {"Authorization": f"Bearer {key}"}
    bodies = [_body(trained, 70 + index) for index in range(8)]
    bodies.append(bodies[0])  # the same customer twice in one batch
    try:
        with httpx.Client(base_url=live_server.url, timeout=30, headers=headers) as client:
            through_psycopg = [client.post("/v1/returns/score", json=body).json() for body in bodies]
            state.score_engine = scoring
            alone = [client.post("/v1/returns/score", json=body) for body in bodies]
            state.score_batch_wait = 0.3  # while busy, a batch waits 0.3 s for company: all of these join it
            state.batchers.clear()
            client.post("/v1/returns/score", json=bodies[0])  # the server is busy from now on
            answers: dict[int, httpx.Response] = {}
            gate = threading.Barrier(len(bodies))

            def send(index: int, body: dict) -> None:
                with httpx.Client(base_url=live_server.url, timeout=30, headers=headers) as own:
                    gate.wait()
                    answers[index] = own.post("/v1/returns/score", json=body)

            threads = [threading.Thread(target=send, args=item) for item in enumerate(bodies)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert state.batchers["score"].largest >= 3
            created = client.post("/v1/returns", json=bodies[1])
            assert created.status_code == 201, created.text
        for index, expected in enumerate(through_psycopg):
            assert expected["degraded"] is False and expected["model_version"] == "1"
            for got in (alone[index], answers[index]):
                assert got.status_code == 200, got.text
                got = got.json()
                assert got["score"] == pytest.approx(expected["score"], abs=1e-12), index
                for field in ("decision", "band", "reasons", "model_reasons", "lines"):
                    assert got[field] == expected[field], (index, field)
        assert created.json()["score"] == pytest.approx(through_psycopg[1]["score"], abs=1e-12)
        with scoring.connect() as connection:  # the driver prepared the scoring reads itself
            names = connection.exec_driver_sql("SELECT name FROM pg_prepared_statements").scalars().all()
        assert any(name.startswith("_recoup_") for name in names)
        assert not any(name.startswith("_pg3_") for name in names)
        # a scoring database whose connection dies under the driver's pipeline (its backend terminated
        # between two scores): the pool replaces the dead connection and the score is read there again,
        # on the new one (a lost connection is not a failed database: no fallback, no rest)
        state.read_engine = make_engine(postgres_url, driver_prepares=True)
        with httpx.Client(base_url=live_server.url, timeout=30, headers=headers) as client:
            assert client.post("/v1/returns/score", json=bodies[2]).status_code == 200
            with state.read_engine.connect() as connection:
                pid = connection.connection.driver_connection.info.backend_pid
            with engine.begin() as connection:
                assert connection.exec_driver_sql(f"SELECT pg_terminate_backend({pid})").scalar_one()
            again = client.post("/v1/returns/score", json=bodies[2])
            assert again.status_code == 200, again.text
            assert state.read_engine_failed_at == -float("inf")
            assert again.json()["score"] == pytest.approx(through_psycopg[2]["score"], abs=1e-12)
            with state.read_engine.connect() as connection:
                assert connection.connection.driver_connection.info.backend_pid != pid
            assert client.post("/v1/returns/score", json=bodies[3]).json()["score"] == pytest.approx(
                through_psycopg[3]["score"], abs=1e-12
            )
            # a scoring database that refuses a read (a statement cancelled by replay on a replica, say;
            # here a role that may not read): the transaction rolls back cleanly, the driver's error
            # reaches the fallback as psycopg raised it, and the state database answers
            role = f"recoup_noread_{os.getpid()}"
            with engine.begin() as connection:
                connection.exec_driver_sql(f"DROP ROLE IF EXISTS {role}")
                connection.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
            try:
                state.read_engine.dispose()
                state.read_engine = make_engine(
                    make_url(postgres_url).set(username=role).render_as_string(hide_password=False),
                    driver_prepares=True,
                )
                state.read_engine_failed_at = -float("inf")
                refused = client.post("/v1/returns/score", json=bodies[4])
                assert refused.status_code == 200, refused.text
                assert state.read_engine_failed_at > -float("inf")
                assert refused.json()["score"] == pytest.approx(through_psycopg[4]["score"], abs=1e-12)
            finally:
                state.read_engine.dispose()
                with engine.begin() as connection:
                    connection.exec_driver_sql(f"DROP ROLE IF EXISTS {role}")
    finally:
        if state.read_engine is not None:
            state.read_engine.dispose()
        live_server.app.state.recoup = None
        state.serving_log.close()
        scoring.dispose()
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_api_process_reads_scores_through_its_own_pool(
    backend: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """As the API process builds its state from the settings: on PostgreSQL, scores read through a
    second, small pool on the state database whose connections psycopg prepares nothing on (the driver
    prepares there itself), while the state engine keeps psycopg's prepared statements; on SQLite
    there is no second pool. A scoring database gets a pool of the scoring kind either way."""
    from api.main import _state_from_settings
    from oms.settings import get_settings

    if backend == "sqlite":
        url = fresh_sqlite(request.getfixturevalue("sqlite_template"), tmp_path)
        replica = fresh_sqlite(request.getfixturevalue("sqlite_template"), tmp_path)
    else:
        url = replica = request.getfixturevalue("postgres_url")
    monkeypatch.setenv("RECOUP_DATABASE_URL", url)
    monkeypatch.setenv("RECOUP_SCORING_DATABASE_URL", replica)
    monkeypatch.setenv("RECOUP_VAR_DIR", str(tmp_path / "var"))
    get_settings.cache_clear()
    state = _state_from_settings()
    try:
        assert state.read_engine is not None
        assert state.read_engine.url.database == make_url(replica).database
        if backend == "sqlite":
            assert state.score_engine is None
            return
        assert state.score_engine is not None and state.score_engine.pool.size() == 2
        for engine, threshold in ((state.engine, 5), (state.score_engine, None), (state.read_engine, None)):
            with engine.connect() as connection:
                assert connection.connection.driver_connection.prepare_threshold == threshold
    finally:
        state.models.stop()
        state.serving_log.close()
        for engine in (state.engine, state.read_engine, state.score_engine):
            if engine is not None:
                engine.dispose()
        get_settings.cache_clear()
