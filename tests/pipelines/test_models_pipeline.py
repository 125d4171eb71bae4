"""The model assets in Dagster: challenger -> gate -> champion (or the rules scorer) -> batch scores, and analytics."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import func, select

from models import registry
from oms.db import make_engine
from oms.importer import import_directory
from oms.settings import get_settings
from oms.tables import ReturnScore
from pipelines.assets import features as feature_assets
from pipelines.assets import models as model_assets
from pipelines.checks import no_future_inputs, null_rates, one_row_per_return
from pipelines.resources import DatabaseResource, MlflowResource, ParquetIOManager
from simulator.retailer import SimulationConfig, simulate
from tests.conftest import fresh_sqlite

ASSETS = [
    feature_assets.source_tables,
    feature_assets.product_stats,
    feature_assets.return_features,
    feature_assets.return_line_features,
    model_assets.fraud_training_set,
    model_assets.fraud_challenger,
    model_assets.fraud_champion,
    model_assets.recovery_challenger,
    model_assets.recovery_champion,
    model_assets.return_scores,
    model_assets.merchandising_analytics,
]
CHECKS = [
    model_assets.fraud_beats_champion,
    model_assets.recovery_beats_champion,
    no_future_inputs,
    null_rates,
    one_row_per_return,
]


@pytest.fixture
def resources(sqlite_template: Path, tmp_path: Path) -> dict:
    url = fresh_sqlite(sqlite_template, tmp_path)
    simulate(SimulationConfig(customers=5_000, months=9, seed=9), tmp_path / "retailer")
    import_directory(tmp_path / "retailer", make_engine(url))
    settings = get_settings()
    return {
        "database": DatabaseResource(url=url),
        "mlflow": MlflowResource(
            tracking_uri=settings.mlflow_tracking_uri, artifact_root=settings.mlflow_artifact_root
        ),
        "frames": ParquetIOManager(base_dir=str(tmp_path / "frames")),
    }


@pytest.mark.slow
def test_models_run_behind_the_gate(resources: dict) -> None:
    months = [f"2024-{m:02d}-01" for m in range(1, 10)]
    for month in months:
        done = dg.materialize(
            ASSETS[:4],
            partition_key=month,
            resources=resources,
            selection=["return_features", "return_line_features", "product_stats", "source_tables"],
        )
        assert done.success
    models = dg.materialize(
        [*ASSETS, *CHECKS], resources=resources, selection=dg.AssetSelection.groups("models", "analytics")
    )
    assert models.success
    gates = {c.check_name: c.passed for c in models.get_asset_check_evaluations()}
    assert gates["fraud_beats_champion"] and gates["recovery_beats_champion"]
    registry.configure(get_settings().mlflow_tracking_uri)
    champion = registry.champion_version()
    assert champion == "1"
    engine = resources["database"].engine
    with engine.connect() as connection:
        scored = connection.execute(select(func.count()).select_from(ReturnScore)).scalar_one()
        tables = {
            name
            for (name,) in connection.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE name LIKE 'analytics_%'"
            )
        }
    assert scored > 1000
    assert {"analytics_return_rates", "analytics_abnormal_items", "analytics_limbo"} <= tables
    # the same data again: an equal challenger must not replace the champion
    again = dg.materialize(
        [*ASSETS, *CHECKS],
        resources=resources,
        selection=dg.AssetSelection.groups("models"),
        raise_on_error=False,
    )
    gates = {c.check_name: c.passed for c in again.get_asset_check_evaluations()}
    assert gates["fraud_beats_champion"] is False
    events = {e.asset_key.to_user_string(): e for e in again.get_asset_materialization_events()}
    assert "fraud_challenger" in events and "fraud_champion" in events  # the gate no longer blocks
    decided = events["fraud_champion"].materialization.metadata
    assert decided["promoted"].value is False and decided["serving"].value == champion
    assert registry.champion_version() == champion
