"""Production profile: a feature backfill across several partitions on Celery workers (RabbitMQ broker,
Dagster run/event storage and state tables on PostgreSQL) equals the in-process run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from oms.db import make_engine
from oms.importer import import_directory
from pipelines.assets.features import product_stats, return_features, return_line_features, source_tables
from pipelines.resources import DatabaseResource, ParquetIOManager
from simulator.retailer import SimulationConfig, simulate
from tests.conftest import IN_CI, truncate

pytestmark = pytest.mark.slow  # `make test` leaves it out; `make test-all` and CI run it


ROOT = Path(__file__).resolve().parents[2]
MONTHS = ["2024-01-01", "2024-02-01", "2024-03-01"]
BROKER = os.environ.get("RECOUP_CELERY_BROKER", "pyamqp://guest:guest@127.0.0.1:5672//")


def _broker_up() -> bool:
    import socket

    host = make_url(BROKER.replace("pyamqp", "amqp")).host or "127.0.0.1"
    try:
        with socket.create_connection((host, 5672), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture
def dagster_postgres(postgres_url: str):
    name = f"recoup_dagster_{uuid.uuid4().hex[:8]}"
    admin = make_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    # dagster-postgres interpolates parameters client-side: it needs the psycopg2 driver
    url = (
        make_url(postgres_url)
        .set(drivername="postgresql+psycopg2", database=name)
        .render_as_string(hide_password=False)
    )
    yield url
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _wait_for_worker(worker: subprocess.Popen) -> None:
    """Until the worker answers a ping through the broker (fail fast if it died)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise AssertionError(f"the Celery worker exited: {worker.stdout.read().decode()[-2000:]}")
        ping = subprocess.run(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "dagster_celery.app",
                "-b",
                BROKER,
                "inspect",
                "ping",
                "--timeout",
                "2",
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
        )
        if "pong" in ping.stdout:
            return
        time.sleep(1)
    raise AssertionError("the Celery worker did not come up within 60 s")


@pytest.mark.timeout(600)
def test_feature_backfill_on_celery_workers_equals_in_process(
    postgres_url: str, dagster_postgres: str, tmp_path: Path
) -> None:
    if not _broker_up():
        message = f"no Celery broker at {BROKER}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    truncate(postgres_url)
    simulate(SimulationConfig(customers=700, months=3, seed=13), tmp_path / "retailer")
    import_directory(tmp_path / "retailer", make_engine(postgres_url))

    # the reference: the same partitions in process
    resources = {
        "database": DatabaseResource(url=postgres_url),
        "frames": ParquetIOManager(base_dir=str(tmp_path / "in_process")),
    }
    for month in MONTHS:
        assert dg.materialize(
            [source_tables, product_stats, return_features, return_line_features],
            partition_key=month,
            resources=resources,
        ).success

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(f"storage:\n  postgres:\n    postgres_url: {dagster_postgres}\n")
    var = tmp_path / "var"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "RECOUP_DATABASE_URL": postgres_url,
        "RECOUP_VAR_DIR": str(var),
        "PYTHONPATH": str(ROOT),
    }
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "dagster_celery.app",
            "-b",
            BROKER,
            "worker",
            "-Q",
            "dagster",
            "--concurrency",
            "2",
            "-l",
            "WARNING",
            "-n",
            f"recoup-test-{uuid.uuid4().hex[:6]}@%h",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    _wait_for_worker(worker)
    try:
        old = {k: os.environ.get(k) for k in ("DAGSTER_HOME", "RECOUP_DATABASE_URL", "RECOUP_VAR_DIR")}
        os.environ.update(
            {"DAGSTER_HOME": str(home), "RECOUP_DATABASE_URL": postgres_url, "RECOUP_VAR_DIR": str(var)}
        )
        from oms.settings import get_settings

        get_settings.cache_clear()
        job = dg.build_reconstructable_job(
            "pipelines.definitions", "features_celery_job", reconstructor_working_directory=str(ROOT)
        )
        with dg.DagsterInstance.from_config(str(home)) as instance:
            for month in MONTHS:
                result = dg.execute_job(
                    job,
                    instance,
                    run_config={"execution": {"config": {"broker": BROKER, "backend": "rpc://"}}},
                    tags={"dagster/partition": month},
                )
                assert result.success, month
                steps = {e.step_key for e in result.all_events if e.event_type_value == "STEP_SUCCESS"}
                assert {"return_features", "return_line_features", "product_stats"} <= steps
                handled = {
                    e.event_specific_data.metadata.get("celery_task_id") is not None
                    for e in result.all_events
                    if e.event_type_value == "ENGINE_EVENT"
                    and e.event_specific_data
                    and getattr(e.event_specific_data, "metadata", None)
                }
                assert handled  # engine events came from the Celery executor
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
    for asset in ("return_features", "return_line_features"):
        for month in MONTHS:
            celery = pd.read_parquet(var / "dagster" / "frames" / asset / f"{month}.parquet")
            local = pd.read_parquet(tmp_path / "in_process" / asset / f"{month}.parquet")
            assert len(celery) > 0
            pd.testing.assert_frame_equal(celery, local)
    time.sleep(0)
