"""The feature pipeline in Dagster: definitions load, a partition range materialises in process, and a
backfill of every partition runs on the multiprocess executor."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from sqlalchemy import Engine

from features.offline import fraud_features
from oms.frames import load_frame
from oms.importer import import_directory
from pipelines.assets.features import product_stats, return_features, return_line_features, source_tables
from pipelines.checks import no_future_inputs, null_rates, one_row_per_return
from pipelines.definitions import defs
from pipelines.partitions import month_window, monthly
from pipelines.resources import DatabaseResource, ParquetIOManager
from simulator.retailer import SimulationConfig, simulate

MONTHS = ["2024-01-01", "2024-02-01", "2024-03-01", "2024-04-01"]


@pytest.fixture
def history(engine: Engine, tmp_path: Path) -> Engine:
    simulate(SimulationConfig(customers=1_500, months=4, seed=5), tmp_path / "retailer")
    import_directory(tmp_path / "retailer", engine)
    return engine


def test_definitions_load() -> None:
    graph = defs.resolve_asset_graph()
    names = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {"source_tables", "product_stats", "return_features", "return_line_features"} <= names
    assert defs.resolve_job_def("features_job").partitions_def == monthly
    assert {s.name for s in defs.schedules} >= {"daily_features"}
    assert "2024-01-01" in monthly.get_partition_keys()


def test_partition_range_materialises_in_process(history: Engine, database_url: str, tmp_path: Path) -> None:
    resources = {
        "database": DatabaseResource(url=database_url),
        "frames": ParquetIOManager(base_dir=str(tmp_path / "frames")),
    }
    everything = fraud_features(history).set_index("return_id")
    returns = load_frame(history, "returns", ["return_id", "requested_at"])
    for month in MONTHS:
        result = dg.materialize(
            [
                source_tables,
                product_stats,
                return_features,
                return_line_features,
                no_future_inputs,
                null_rates,
                one_row_per_return,
            ],
            partition_key=month,
            resources=resources,
            selection=["return_features", "return_line_features"] if month != MONTHS[0] else None,
        )
        assert result.success
        for check in result.get_asset_check_evaluations():
            assert check.passed, (month, check.check_name, check.metadata)
        frame = pd.read_parquet(tmp_path / "frames" / "return_features" / f"{month}.parquet")
        start, end = month_window(month)
        expected = returns[(returns["requested_at"] >= start) & (returns["requested_at"] < end)]
        assert sorted(frame["return_id"]) == sorted(expected["return_id"])
        # a month computed alone equals the same returns in a batch over the whole history
        batch = everything.loc[frame["return_id"]].reset_index()
        pd.testing.assert_frame_equal(
            frame.drop(columns="requested_at"), batch.drop(columns="requested_at"), check_dtype=False
        )
        lines = pd.read_parquet(tmp_path / "frames" / "return_line_features" / f"{month}.parquet")
        assert set(lines["return_id"]) == set(frame["return_id"])


BACKFILL = """
import json, sys
import dagster as dg
job = dg.build_reconstructable_job("pipelines.definitions", "features_job")
steps = {}
with dg.instance_for_test(temp_dir=sys.argv[1]) as instance:
    for month in sys.argv[2:]:
        result = dg.execute_job(
            job,
            instance,
            run_config={"execution": {"config": {"multiprocess": {
                "max_concurrent": 2,
                "start_method": {"forkserver": {"preload_modules": ["pipelines.definitions"]}},
            }}}},
            tags={"dagster/partition": month},
        )
        steps[month] = sorted(e.step_key for e in result.all_events if e.event_type_value == "STEP_SUCCESS") if result.success else None
print(json.dumps(steps))
"""


@pytest.mark.slow
def test_backfill_runs_on_the_multiprocess_executor(sqlite_template: Path, tmp_path: Path) -> None:
    """Every partition holding data, one run each, steps in parallel processes. The run happens in a
    fresh interpreter: a forkserver started inside the test process would keep the environment of
    whichever test started it first."""
    import json
    import os
    import subprocess
    import sys

    from oms.db import make_engine
    from tests.conftest import fresh_sqlite

    database_url = fresh_sqlite(sqlite_template, tmp_path)
    simulate(SimulationConfig(customers=800, months=2, seed=5), tmp_path / "retailer")
    import_directory(tmp_path / "retailer", make_engine(database_url))
    months = MONTHS[:2]
    (tmp_path / "dagster").mkdir()
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "RECOUP_DATABASE_URL": database_url,
        "RECOUP_VAR_DIR": str(tmp_path / "var"),
        "PYTHONPATH": str(root),
    }
    done = subprocess.run(
        [sys.executable, "-c", BACKFILL, str(tmp_path / "dagster"), *months],
        capture_output=True,
        text=True,
        cwd=root,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    steps = json.loads(done.stdout.strip().splitlines()[-1])
    for month in months:
        assert steps[month] is not None, (month, done.stderr[-3000:])
        assert {"return_features", "return_line_features", "product_stats"} <= set(steps[month])
    frames = Path(tmp_path / "var" / "dagster" / "frames" / "return_features")
    assert sorted(p.stem for p in frames.glob("*.parquet")) == months


def test_repository_dagster_yaml_keeps_storage_under_var(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(tmp_path)
    with dg.DagsterInstance.from_config(str(root)) as instance:
        assert instance.run_storage is not None
        run = instance.create_run_for_job(defs.resolve_job_def("analytics_job"))
        assert instance.get_run_by_id(run.run_id) is not None
    assert (tmp_path / "var" / "dagster" / "storage").is_dir()
