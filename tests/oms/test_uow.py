"""Units of work: reading units never keep a change, writing units commit."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import DBAPIError

from oms.apikeys import create_key
from oms.tables import ApiKey
from oms.uow import unit_of_work
from tests.conftest import truncate


def _keys(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(ApiKey)).scalar_one()


def test_a_reading_unit_keeps_nothing_and_a_writing_unit_commits(engine: Engine) -> None:
    with unit_of_work(engine) as session:
        create_key(session, "kept", ["admin"])
    assert _keys(engine) == 1
    if engine.dialect.name == "postgresql":
        # READ ONLY: the database refuses the write itself
        with (
            pytest.raises(DBAPIError, match="read-only transaction"),
            unit_of_work(engine, write=False) as session,
        ):
            create_key(session, "refused", ["admin"])
    else:
        with unit_of_work(engine, write=False) as session:
            create_key(session, "rolled back", ["admin"])
            assert session.execute(select(func.count()).select_from(ApiKey)).scalar_one() == 2
    assert _keys(engine) == 1
    with unit_of_work(engine, write=False) as session:  # and reading works on both
        assert [k.name for k in session.execute(select(ApiKey)).scalars()] == ["kept"]


def test_a_pooled_connection_that_died_while_idle_is_replaced_at_checkout(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL only: SQLite is in process, its connections do not die."""
    from sqlalchemy import text

    from oms import db

    truncate(postgres_url)
    engine = db.make_engine(postgres_url)

    with engine.connect() as connection:
        victim = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
    with engine.connect() as connection:  # used moments ago: handed out without a ping
        assert connection.execute(text("SELECT pg_backend_pid()")).scalar_one() == victim
    with engine.connect() as connection, engine.connect() as other:  # the second is a new connection
        assert other.execute(text("SELECT pg_backend_pid()")).scalar_one() != victim
        other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": victim})
        other.commit()
    monkeypatch.setattr(db, "PING_AFTER_IDLE", 0.0)  # every pooled connection counts as idle now
    for _ in range(3):  # whichever pooled connection comes out is alive, or replaced before use
        with engine.connect() as connection:
            assert connection.execute(text("SELECT pg_backend_pid()")).scalar_one() != victim
    with unit_of_work(engine, write=False) as session:  # and a pinged connection still reads READ ONLY
        assert session.execute(select(func.count()).select_from(ApiKey)).scalar_one() == 0
    engine.dispose()


def test_a_reading_unit_sees_one_snapshot_and_leaves_the_connection_as_it_was(engine: Engine) -> None:
    """A key created (and committed) while a reading unit is open does not appear in it, however many
    statements the unit runs; the next unit on the pooled connection sees it, and writes as before."""
    from sqlalchemy import text

    with unit_of_work(engine, write=False) as session:
        before = session.execute(select(func.count()).select_from(ApiKey)).scalar_one()
        with unit_of_work(engine) as writer:  # another connection, committed while the read is open
            create_key(writer, "meanwhile", ["admin"])
        assert session.execute(select(func.count()).select_from(ApiKey)).scalar_one() == before
        if engine.dialect.name == "postgresql":
            level = session.execute(text("SHOW transaction_isolation")).scalar_one()
            assert level == "repeatable read"
    assert _keys(engine) == before + 1
    with unit_of_work(engine) as session:  # the pooled connection writes, at the default level
        create_key(session, "after", ["admin"])
        if engine.dialect.name == "postgresql":
            assert session.execute(text("SHOW transaction_isolation")).scalar_one() == "read committed"
    assert _keys(engine) == before + 2


def test_a_last_read_ends_the_reading_unit_in_the_same_round_trip(engine: Engine) -> None:
    """`Driver.run(..., end_transaction=True)`: the statements run inside the unit's READ ONLY
    REPEATABLE READ transaction, the COMMIT goes in the same pipeline, and the unit then ends cleanly
    with nothing left open; the pooled connection writes afterwards as before."""
    from sqlalchemy import text

    from oms.driver import Driver

    with unit_of_work(engine, write=False) as session:
        db = Driver(session.connection())
        if db.postgres:
            statements = [
                (
                    "SELECT current_setting('transaction_isolation'), current_setting('transaction_read_only')",
                    {},
                ),
                ("SELECT COUNT(*) FROM api_keys", {}),
            ]
        else:
            statements = [("SELECT 'n/a', 'n/a'", {}), ("SELECT COUNT(*) FROM api_keys", {})]
        (settings_row,), (count_row,) = db.run(statements, end_transaction=True)
        if db.postgres:
            from psycopg.pq import TransactionStatus

            assert settings_row == ("repeatable read", "on")
            assert db.raw.info.transaction_status == TransactionStatus.IDLE  # committed in the pipeline
        assert count_row == (_keys(engine),)
    with unit_of_work(engine) as session:
        create_key(session, "after", ["admin"])
        if engine.dialect.name == "postgresql":
            assert session.execute(text("SHOW transaction_read_only")).scalar_one() == "off"
    assert _keys(engine) == count_row[0] + 1


@pytest.fixture
def killer(postgres_url: str):
    """Terminates the backend of a session's connection: the connection is lost mid-transaction."""
    from sqlalchemy import text

    from oms.db import make_engine

    truncate(postgres_url)
    admin = make_engine(postgres_url, isolation_level="AUTOCOMMIT")

    def kill(session) -> None:
        pid = session.connection().connection.driver_connection.info.backend_pid
        with admin.connect() as connection:
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

    yield kill
    admin.dispose()


def test_work_that_lost_its_connection_runs_again_on_a_new_one(postgres_url: str, killer) -> None:
    from oms.db import make_engine
    from oms.uow import retrying

    engine = make_engine(postgres_url)
    attempts: list[int] = []

    def work(session) -> str:
        attempts.append(1)
        create_key(session, f"attempt-{len(attempts)}", ["admin"])
        session.flush()
        if len(attempts) == 1:
            killer(session)
            session.execute(select(1))  # the lost connection shows here
        return "done"

    assert retrying(engine, work) == "done"
    assert len(attempts) == 2
    with unit_of_work(engine, write=False) as session:
        assert [k.name for k in session.execute(select(ApiKey)).scalars()] == ["attempt-2"]
    engine.dispose()


@pytest.mark.parametrize("replayable", [False, True])
def test_a_connection_lost_while_committing_is_retried_only_when_replayable(
    postgres_url: str, killer, replayable: bool
) -> None:
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    from oms.db import make_engine
    from oms.uow import CommitUnknownError, retrying

    engine = make_engine(postgres_url)
    attempts: list[int] = []

    def lose_the_first_commit(session: Session) -> None:
        if len(attempts) == 1:
            killer(session)

    def work(session: Session) -> int:
        attempts.append(1)
        create_key(session, "once", ["admin"])
        return len(attempts)

    event.listen(Session, "before_commit", lose_the_first_commit)
    try:
        if replayable:
            assert retrying(engine, work, replayable=True) == 2
        else:
            with pytest.raises(CommitUnknownError, match="may or may not have been made"):
                retrying(engine, work)
    finally:
        event.remove(Session, "before_commit", lose_the_first_commit)
        engine.dispose()
    assert len(attempts) == (2 if replayable else 1)
    assert _keys(make_engine(postgres_url)) == (1 if replayable else 0)
