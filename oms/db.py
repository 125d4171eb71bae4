"""Engines for the state database: SQLite (embedded default) or PostgreSQL, configured alike."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.engine import make_url


def normalise_url(url: str) -> str:
    """Use the psycopg 3 driver for plain `postgresql://` URLs (psycopg2 is not a dependency)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str, *, driver_prepares: bool = False, **kwargs: Any) -> Engine:
    """An engine for `url`; SQLite gets foreign keys, WAL and a busy timeout, PostgreSQL UTC sessions
    with generic plans for prepared statements.

    `driver_prepares` (PostgreSQL): psycopg prepares nothing on the engine's connections, and
    `oms.driver.Driver` keeps its own prepared statements there, sending its reads straight to libpq
    (about half the client CPU of psycopg's cursors). For an engine that serves the driver's hot reads
    (the scoring API's); statements through SQLAlchemy are then parsed and planned on every call."""
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy, not the driver, issue BEGIN so that transactions and savepoints nest.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA cache_size=-262144")  # 256 MiB: keeps index pages of big loads in memory
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # Writers ask for IMMEDIATE (execution option sqlite_begin): a deferred transaction that
            # reads, then writes after another writer committed fails at once instead of waiting.
            conn.exec_driver_sql(f"BEGIN {conn.get_execution_options().get('sqlite_begin', '')}".strip())

        return engine

    # a pooled connection idle for a while is pinged before use (PostgreSQL may have restarted); one
    # that was in use moments ago is not: a ping per checkout is a round trip per request
    kwargs.setdefault("pool_pre_ping", False)
    # psycopg prepares a statement once a connection has run it 5 times (the hot paths: scoring, online
    # features, lifecycle lookups). Generic plans keep PostgreSQL from re-planning those on every call;
    # the online features' lateral snapshot lookups cost more to plan than to run.
    kwargs.setdefault("connect_args", {"options": "-c timezone=UTC -c plan_cache_mode=force_generic_plan"})
    if driver_prepares:
        kwargs["connect_args"] = {**kwargs["connect_args"], "prepare_threshold": None}
    engine = create_engine(url, **kwargs)
    _ping_when_idle(engine)

    @event.listens_for(engine, "connect")
    def _prepared_statements(dbapi_connection: Any, _record: Any) -> None:
        # batched reads (`Driver.run_each`) have a few texts per kind of read (which parameters are
        # NULL for the whole batch): room for all of them, so none is evicted and prepared again
        dbapi_connection.prepared_max = 512

    return engine


PING_AFTER_IDLE = 10.0  # seconds a pooled connection may sit unused before it is pinged at checkout


def _ping_when_idle(engine: Engine) -> None:
    """Pessimistic disconnect handling for connections that sat in the pool: a dead one is replaced
    before the caller gets it (the pool retries on `DisconnectionError`)."""

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        used = record.info.get("recoup_checked_in")
        if used is not None and time.monotonic() - used < PING_AFTER_IDLE:
            return
        try:
            # outside a transaction: the caller's unit of work sets up its own (READ ONLY, say)
            autocommit, dbapi_connection.autocommit = dbapi_connection.autocommit, True
            try:
                engine.dialect.do_ping(dbapi_connection)
            finally:
                dbapi_connection.autocommit = autocommit
        except engine.dialect.loaded_dbapi.Error as error:
            raise exc.DisconnectionError(f"stale pooled connection: {error}") from error

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info["recoup_checked_in"] = time.monotonic()
