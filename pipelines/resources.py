"""Dagster resources: the state database and the parquet store for partitioned frames."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import dagster as dg
import pandas as pd
from sqlalchemy import Engine

from oms.db import make_engine
from oms.settings import get_settings


class DatabaseResource(dg.ConfigurableResource):
    """The state database (SQLite by default, PostgreSQL in production). Empty url: RECOUP_DATABASE_URL."""

    url: str = ""

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.url or get_settings().database_url)


class ParquetIOManager(dg.ConfigurableIOManager):
    """DataFrames as parquet files, one per asset partition, under `<var>/dagster/frames/` by default.

    Downstream assets that read several partitions get them concatenated.
    """

    base_dir: str = ""

    def _root(self) -> Path:
        return Path(self.base_dir or get_settings().var_dir / "dagster" / "frames")

    def _path(self, key: list[str], partition: str | None) -> Path:
        return self._root().joinpath(*key) / f"{partition or 'all'}.parquet"

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        partition = context.partition_key if context.has_partition_key else None
        path = self._path(list(context.asset_key.path), partition)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".partial")
        obj.to_parquet(temporary, index=False)
        temporary.replace(path)  # readers never see half a file
        context.add_output_metadata({"rows": len(obj), "path": str(path)})

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        key = list(context.asset_key.path)
        keys = context.asset_partition_keys if context.has_asset_partitions else [None]
        frames = [
            pd.read_parquet(self._path(key, partition))
            for partition in keys
            if self._path(key, partition).exists()
        ]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


class MlflowResource(dg.ConfigurableResource):
    """The MLflow tracking store and registry. Empty values: the settings (a SQLite store under var/)."""

    tracking_uri: str = ""
    artifact_root: str = ""

    def setup(self) -> str:
        from models import registry

        settings = get_settings()
        artifact_root = self.artifact_root or settings.mlflow_artifact_root
        registry.configure(self.tracking_uri or settings.mlflow_tracking_uri, artifact_root)
        return artifact_root
