"""Settings are read lazily from the environment and refuse development secrets in production."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from oms.settings import DEV_SECRET, Settings, get_settings


def test_defaults_live_under_var_dir(tmp_path: Path) -> None:
    settings = get_settings()
    var = Path(settings.var_dir)
    assert settings.database_url == f"sqlite:///{var / 'recoup.db'}"
    assert settings.mlflow_tracking_uri == f"sqlite:///{var / 'mlflow.db'}"
    assert settings.mlflow_artifact_root == str(var / "mlartifacts")
    assert settings.data_dir == var / "data"
    assert settings.policy_path.name == "policy.toml"


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECOUP_DATABASE_URL", "postgresql://db.example/recoup")
    monkeypatch.setenv("RECOUP_IMPORT_CHUNK_ROWS", "5000")
    get_settings.cache_clear()
    assert get_settings().database_url == "postgresql://db.example/recoup"
    assert get_settings().import_chunk_rows == 5000


def test_dotenv_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("RECOUP_IMPORT_CHUNK_ROWS=1234\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RECOUP_IMPORT_CHUNK_ROWS", raising=False)
    assert Settings().import_chunk_rows == 1234


def test_production_refuses_default_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECOUP_ENV", "production")
    with pytest.raises(ValidationError, match="RECOUP_SECRET_KEY"):
        Settings()
    monkeypatch.setenv("RECOUP_SECRET_KEY", "short")
    with pytest.raises(ValidationError, match="RECOUP_SECRET_KEY"):
        Settings()
    monkeypatch.setenv("RECOUP_SECRET_KEY", "x" * 40)
    assert Settings().secret_key == "x" * 40


def test_development_accepts_default_secret() -> None:
    assert Settings(env="development").secret_key == DEV_SECRET


def test_api_docs_are_off_in_production_unless_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(env="development").serves_api_docs
    assert Settings(env="test").serves_api_docs
    monkeypatch.setenv("RECOUP_SECRET_KEY", "x" * 40)
    assert not Settings(env="production").serves_api_docs
    monkeypatch.setenv("RECOUP_API_DOCS", "true")
    assert Settings(env="production").serves_api_docs
    monkeypatch.setenv("RECOUP_API_DOCS", "false")
    assert not Settings(env="development").serves_api_docs
