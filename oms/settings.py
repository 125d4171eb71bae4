"""The one settings object, read lazily from the environment (prefix `RECOUP_`) and `.env`.

Nothing reads settings at import time: call `get_settings()`; tests call `get_settings.cache_clear()`
after changing the environment.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_POLICY_PATH = Path(__file__).with_name("policy.toml")
DEV_SECRET = "recoup-development-secret-change-me"


class SettingsError(ValueError):
    """The configuration cannot be used (e.g. a default secret in production)."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RECOUP_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    env: Literal["development", "test", "production"] = Field(
        "development", description="Deployment profile; `production` refuses default secrets."
    )
    var_dir: Path = Field(Path("var"), description="Runtime state: SQLite files, MLflow store, parquet.")
    database_url: str = Field(
        "", description="State database (SQLAlchemy URL). Default: sqlite:///<var_dir>/recoup.db"
    )
    scoring_database_url: str = Field(
        "",
        description="Where the API's scores read (a streaming replica of the state database, say). "
        "Default: the state database.",
    )
    mlflow_tracking_uri: str = Field(
        "", description="MLflow tracking store. Default: sqlite:///<var_dir>/mlflow.db"
    )
    mlflow_artifact_root: str = Field("", description="MLflow artifacts. Default: <var_dir>/mlartifacts")
    policy_path: Path = Field(DEFAULT_POLICY_PATH, description="The versioned returns policy file (TOML).")
    data_dir: Path | None = Field(None, description="Where generated datasets live. Default: <var_dir>/data")
    uci_path: Path = Field(
        Path("../shared/data/uci_online_retail/online_retail.parquet"),
        description="The UCI Online Retail file, for `recoup demo --data uci`.",
    )
    secret_key: str = Field(
        DEV_SECRET, description="Signs dashboard sessions and derives webhook signatures; set in production."
    )
    webhook_urls: str = Field("", description="Comma-separated webhook URLs for customer notifications.")
    webhook_secret: str = Field("", description="HMAC-SHA256 secret signing webhook deliveries.")
    api_host: str = Field("127.0.0.1", description="Where `recoup serve` listens.")
    api_port: int = Field(8000, description="Port of `recoup serve`.")
    api_docs: bool | None = Field(
        None,
        description="Serve the API's documentation (/docs, /redoc, /openapi.json). Default: on, except "
        "when RECOUP_ENV=production.",
    )
    pipeline_start: str = Field(
        "2024-01-01", description="First month of the Dagster monthly partitions (YYYY-MM-DD)."
    )
    model_refresh_seconds: float = Field(
        30.0, gt=0, description="How often the API checks for a new champion."
    )
    dashboard_session_hours: float = Field(
        12.0, gt=0, description="How long a dashboard sign-in lasts (a signed cookie; reloads keep it)."
    )
    scoring_pipeline: Literal["driver", "psycopg"] = Field(
        "driver",
        description="Who pipelines and prepares the scoring reads on PostgreSQL: oms.driver (measured "
        "faster), or psycopg's own pipeline mode (benchmarks/serving_stack.py compares them).",
    )
    import_chunk_rows: int = Field(100_000, gt=0, description="Rows per chunk when importing files.")
    score_max_batch: int = Field(
        32,
        ge=1,
        description="Most scores an API process serves together (requests that arrived together; 1: one by one).",
    )
    score_batch_wait_ms: float = Field(
        0.0,
        ge=0,
        le=50,
        description="While busy, how long a new batch of scores waits for more requests (throughput for latency).",
    )

    @model_validator(mode="after")
    def _fill_defaults_and_refuse_dev_secrets(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.var_dir / 'recoup.db'}"
        if not self.mlflow_tracking_uri:
            self.mlflow_tracking_uri = f"sqlite:///{self.var_dir / 'mlflow.db'}"
        if self.data_dir is None:
            self.data_dir = self.var_dir / "data"
        if not self.mlflow_artifact_root:
            self.mlflow_artifact_root = str(self.var_dir / "mlartifacts")
        if self.env == "production" and (self.secret_key == DEV_SECRET or len(self.secret_key) < 32):
            raise SettingsError(
                "RECOUP_SECRET_KEY must be set to a random string of at least 32 characters "
                "when RECOUP_ENV=production"
            )
        return self

    @property
    def serves_api_docs(self) -> bool:
        return self.api_docs if self.api_docs is not None else self.env != "production"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
