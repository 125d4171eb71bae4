"""Test fixtures: every database test runs on SQLite and on PostgreSQL.

PostgreSQL comes from RECOUP_TEST_POSTGRES_URL (any database on the server; the suite creates and drops
its own `recoup_test_<pid>` database there). Without it the PostgreSQL variants are skipped with a
reason, except when CI=true: then a missing or unreachable server fails the run instead.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import make_url

from oms.db import make_engine, normalise_url
from oms.invariants import violations
from oms.migrate import upgrade
from oms.settings import get_settings
from oms.tables import metadata

BACKENDS = ("sqlite", "postgresql")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test gets its own var/ directory and freshly read settings."""
    monkeypatch.setenv("RECOUP_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("RECOUP_ENV", "test")
    monkeypatch.delenv("RECOUP_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _postgres_admin_url() -> str | None:
    url = os.environ.get("RECOUP_TEST_POSTGRES_URL")
    if not url:
        if IN_CI:
            pytest.fail("CI=true but RECOUP_TEST_POSTGRES_URL is not set: the PostgreSQL tests cannot run")
        return None
    return normalise_url(url)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session."""
    admin_url = _postgres_admin_url()
    if admin_url is None:
        pytest.skip("PostgreSQL variant: set RECOUP_TEST_POSTGRES_URL to run it")
    admin = make_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"recoup_test_{os.getpid()}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        message = f"PostgreSQL at {make_url(admin_url).render_as_string()} is unreachable: {exc}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    yield url
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that each test copies (faster than migrating per test)."""
    path = tmp_path_factory.mktemp("template") / "recoup.db"
    upgrade(f"sqlite:///{path}")
    return path


def fresh_sqlite(template: Path, directory: Path) -> str:
    path = directory / f"recoup-{uuid.uuid4().hex[:8]}.db"
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty, migrated database of the test's backend."""
    if backend == "sqlite":
        url = fresh_sqlite(request.getfixturevalue("sqlite_template"), tmp_path)
    else:
        url = request.getfixturevalue("postgres_url")
        truncate(url)
    yield url
    if request.node.get_closest_marker("violates_invariants") is None:
        assert_invariants_hold(url)


def assert_invariants_hold(url: str) -> None:
    """After every database test: nothing it left is returned or refunded beyond what was bought or paid."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            found = violations(connection)
    finally:
        engine.dispose()
    assert not found, "invariants broken: " + "; ".join(str(v) for v in found[:5])


def truncate(url: str) -> None:
    engine = make_engine(url)
    with engine.begin() as connection:
        names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
        connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def connection(engine: Engine) -> Iterator[Connection]:
    """A connection inside an outer transaction that is rolled back after the test."""
    with engine.connect() as connection:
        transaction = connection.begin()
        yield connection
        if transaction.is_active:
            transaction.rollback()
