"""Batches of small reads on the DB-API driver under a SQLAlchemy connection: the request hot path.

Kept against psycopg 3's own pipeline mode (prepare_threshold 5), measured alternating in one run
(`benchmarks/serving_stack.py`, 1M lines, 100 req/s): psycopg's scoring p99 +248 %, maximum -6 %.

Return time needs a dozen small indexed reads (the return's context for the policy, the features for the
model). Through the ORM each costs its own round trip and a compile/cache-key pass; here every statement
of a batch is named-parameter SQL text, translated once per text for the driver, and on PostgreSQL the
whole batch goes in one psycopg pipeline: one network round trip, prepared after a few uses. SQLite
runs them one after another (it is in process). Statements run on the caller's connection, so inside
the caller's transaction.

On a PostgreSQL connection that psycopg prepares nothing on (`prepare_threshold=None`: the scoring
engine's, `oms.db.make_engine(driver_prepares=True)`), the pipeline goes straight to libpq instead,
and this driver keeps the connection's prepared statements itself: about half of psycopg's client CPU
for a score's ten small reads (0.15-0.18 against 0.34-0.37 ms; `_Pipeline`). Only there, because
psycopg drops every prepared statement of the connection, its own and ours, after a ROLLBACK when it
has prepared any itself.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
import select
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from oms.types import CENT, SQLITE_DATETIME_FORMAT

Statement = tuple[str, dict[str, Any]]

_NAMED = re.compile(r"(?<!:):([a-z_0-9]+)")
_LIST = re.compile(r"\{([a-z_]+):(\d+)\}")  # {name:count}: an expanded IN-list on SQLite
# EPOCH_US(column): a timestamp as int microseconds since the epoch; FLOAT8(column): an amount as a
# float. PostgreSQL converts in the query (an int8 or float8 loads far cheaper than a datetime or a
# Decimal); SQLite hands the stored value over as it is, and the caller converts it.
_EPOCH_US = re.compile(r"EPOCH_US\(([^()]+)\)")
_FLOAT8 = re.compile(r"FLOAT8\(((?:[^()]|\([^()]*\))+)\)")  # one level of nesting: FLOAT8(SUM(x))


@functools.lru_cache(maxsize=2048)
def _translate(text: str, postgres: bool) -> str:
    if postgres:
        text = _EPOCH_US.sub(r"(EXTRACT(EPOCH FROM \1) * 1000000)::bigint", text)
        text = _FLOAT8.sub(r"(\1)::float8", text)
        return _NAMED.sub(lambda m: f"%({m.group(1)})s", text)
    text = _FLOAT8.sub(r"\1", _EPOCH_US.sub(r"\1", text))
    return _LIST.sub(lambda m: ", ".join(f":{m.group(1)}{i}" for i in range(int(m.group(2)))), text)


class Driver:
    """Runs named-parameter SQL on the connection's DB-API driver (sqlite3 or psycopg 3)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.raw = connection.connection.driver_connection
        self.postgres = connection.dialect.name == "postgresql"
        self.sent = 0  # statements this driver has sent (`run_each` sends one per kind of read)
        # the statements this driver prepared on this connection (its pool entry's info lives as long
        # as the connection), when psycopg prepares none there
        self._pipeline: _Pipeline | None = None
        if self.postgres and self.raw.prepare_threshold is None:
            info = connection.connection.info
            prepared = info.get("recoup_prepared")
            if prepared is None or prepared.connection is not self.raw:  # a new connection behind it
                prepared = info["recoup_prepared"] = _Pipeline(self.raw)
            self._pipeline = prepared

    def sql(self, text: str) -> str:
        """`text` with :named parameters in the driver's style (cached per text)."""
        return _translate(text, self.postgres)

    def time(self, moment: dt.datetime) -> Any:
        """A point in time as a parameter (compared as text on SQLite, so in its stored format)."""
        moment = moment.astimezone(dt.UTC)
        return moment if self.postgres else moment.replace(tzinfo=None).strftime(SQLITE_DATETIME_FORMAT)

    def in_list(self, name: str, values: Sequence[Any]) -> tuple[str, dict[str, Any]]:
        """`column <fragment>` tests membership in `values`: one array parameter on PostgreSQL (the
        statement text stays the same whatever the count, so it is prepared once), an expanded list on
        SQLite."""
        if self.postgres:
            return f"= ANY(:{name})", {name: list(values)}
        if not values:
            return "IN (NULL)", {}
        return f"IN ({{{name}:{len(values)}}})", {f"{name}{i}": value for i, value in enumerate(values)}

    def run(self, statements: Sequence[Statement], *, end_transaction: bool = False) -> list[list[tuple]]:
        """Execute the statements and fetch all their rows; on PostgreSQL in one pipeline.

        `end_transaction` (PostgreSQL): the pipeline ends with COMMIT, so a transaction that only reads
        takes one round trip in all instead of two (the caller's own commit then has nothing to do).
        Only for a caller that reads nothing more in this transaction and wrote nothing before."""
        self.sent += len(statements)
        if not self.postgres:
            cursor = self.raw.cursor()
            try:
                return [cursor.execute(self.sql(text), params).fetchall() for text, params in statements]
            finally:
                cursor.close()
        import psycopg

        try:
            if self._pipeline is not None:
                try:
                    return self._pipeline.run(
                        [(self.sql(text), params) for text, params in statements], end_transaction
                    )
                except _Broken as broken:
                    lost: BaseException = broken.error
            else:
                return self._run_cursors(statements, end_transaction)
        except psycopg.Error as error:
            if not (self.raw.broken or self.raw.closed):
                raise
            lost = error
        # the connection is lost, or its protocol in an unknown state: invalidated, so that the pool
        # replaces it, and reported as SQLAlchemy reports a lost connection (`oms.uow.retrying` runs
        # the work again on a new one)
        self.connection.invalidate(lost)
        raise DBAPIError.instance(None, None, lost, psycopg.Error, connection_invalidated=True) from lost

    def _run_cursors(self, statements: Sequence[Statement], end_transaction: bool) -> list[list[tuple]]:
        """`run` through psycopg's own pipeline and cursors."""
        cursors = [self.raw.cursor() for _ in range(len(statements) + end_transaction)]
        try:
            with self.raw.pipeline():
                for cursor, (text, params) in zip(cursors, statements, strict=False):  # COMMIT's is last
                    cursor.execute(self.sql(text), params)
                if end_transaction:
                    cursors[-1].execute("COMMIT")
            return [cursor.fetchall() for cursor, _ in zip(cursors, statements, strict=False)]
        finally:
            for cursor in cursors:
                cursor.close()

    def run_each(
        self, requests: Sequence[Sequence[Statement]], *, end_transaction: bool = False
    ) -> list[list[list[tuple]]]:
        """`run` for several requests' statements at once: each request's results, in its order.

        On PostgreSQL, a statement text that several requests run runs once for all of them when their
        parameters can travel together (`_kinds`; otherwise each runs its own): one statement per kind
        of read instead of one per request, so a batch of requests costs the database and the driver
        little more per statement than one request does. Each request gets the rows it gets alone; in
        the same order when the statement orders its rows (as alone, an unordered statement's rows come
        in no promised order). A string parameter travels as `text` (Recoup's are identifiers compared
        with text columns). If a grouped statement fails, the transaction fails: a caller that batches
        requests (`api.batching`) then serves each request alone."""
        if not self.postgres or len(requests) < 2:
            flat = self.run(
                [s for statements in requests for s in statements], end_transaction=end_transaction
            )
            out, start = [], 0
            for statements in requests:
                out.append(flat[start : start + len(statements)])
                start += len(statements)
            return out
        # the same text at the same occurrence in several requests: one group
        groups: dict[tuple[str, int], list[tuple[int, int, dict[str, Any]]]] = {}
        for index, statements in enumerate(requests):
            seen: dict[str, int] = {}
            for position, (text, params) in enumerate(statements):
                occurrence = seen[text] = seen.get(text, -1) + 1
                groups.setdefault((text, occurrence), []).append((index, position, params))
        batch: list[Statement] = []
        slots: list[list[tuple[int, int]]] = []  # per statement run: the (request, position) it answers
        for (text, _), members in groups.items():
            each = [params for _, _, params in members]
            kinds = _kinds(each) if len(members) > 1 else None
            if kinds is not None:
                batch.append(_for_all(text, each, kinds))
                slots.append([(index, position) for index, position, _ in members])
            else:
                batch += [(text, params) for _, _, params in members]
                slots += [[(index, position)] for index, position, _ in members]
        out = [[[] for _ in statements] for statements in requests]
        for answered, rows in zip(slots, self.run(batch, end_transaction=end_transaction), strict=True):
            if len(answered) == 1:
                index, position = answered[0]
                out[index][position] = rows
                continue
            for row in rows:  # (member number from 1, the statement's columns...)
                index, position = answered[row[0] - 1]
                out[index][position].append(row[1:])
        return out


_PLACEHOLDER = re.compile(r"%\(([a-z_0-9]+)\)([sb])|%%|%")
PREPARED_MAX = 512  # statements prepared per connection; past that, the rest are sent unprepared
# a prepared statement that no longer holds: gone from the session (DEALLOCATE ALL, DISCARD ALL), or
# planned against a table whose columns changed type since ("cached plan must not change result type")
_GONE, _STALE = "26000", "0A000"


@functools.lru_cache(maxsize=2048)
def _numbered(query: str, encoding: str) -> tuple[bytes, tuple[str, ...], tuple[bool, ...]]:
    """A psycopg-style query (%(name)s, %(name)b binary, %% a percent sign) as libpq's $n placeholders,
    in the connection's encoding: (the query, the parameter names in $n order, whether each travels
    binary). A name used twice is one parameter. Anything else after a % is refused, as psycopg does."""
    from psycopg import ProgrammingError

    names: list[str] = []
    binary: list[bool] = []

    def number(match: re.Match) -> str:
        if match.group(0) == "%%":
            return "%"
        if match.group(0) == "%":
            raise ProgrammingError(f"only '%(name)s', '%(name)b' and '%%' may follow a %: {query[:200]}")
        name, kind = match.group(1), match.group(2)
        if name in names:
            if binary[names.index(name)] != (kind == "b"):
                raise ProgrammingError(f"parameter {name} is used both as %s and as %b")
        else:
            names.append(name)
            binary.append(kind == "b")
        return f"${names.index(name) + 1}"

    return _PLACEHOLDER.sub(number, query).encode(encoding), tuple(names), tuple(binary)


@functools.cache
def _can_close() -> bool:
    """Whether libpq can close a prepared statement by protocol (PQsendClosePrepared, libpq 17+)."""
    from psycopg import pq

    return pq.version() >= 170000


class _Broken(Exception):
    """The protocol failed under the pipeline (the network, a lost synchronisation): the connection
    cannot be used again; `Driver.run` invalidates it in the pool and raises `error`."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class _Pipeline:
    """One pipeline of statements straight on libpq, under a psycopg connection that prepares nothing
    itself (`prepare_threshold=None`), so that none of psycopg's ROLLBACK-time `DEALLOCATE ALL` can drop
    the statements prepared here.

    Parameters are dumped and rows loaded by psycopg's own adapters (`psycopg.adapt.Transformer`), in
    the formats psycopg uses, so rows come back exactly as psycopg's cursors give them. Each text is
    prepared under a name of this connection the first time it runs, in the same pipeline (once past
    `PREPARED_MAX` names, the rest run unprepared). Outside a transaction, the pipeline starts with the
    BEGIN psycopg would send (the connection's isolation level, read-only and deferrable settings);
    `end_transaction` ends it with COMMIT. A statement that fails raises the error psycopg would raise
    for it, after the pipeline is read to its end: the connection is left idle in a failed transaction,
    for the caller to roll back, as psycopg leaves it. A prepare that failed or was skipped is
    forgotten; so is a prepared statement that no longer holds (the session lost it: every name is
    forgotten; a table it reads changed: that one is closed), so the next run prepares it again, as
    psycopg recovers after its ROLLBACK. Like psycopg, it holds the connection's lock while it talks."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.prepared: dict[tuple[bytes, tuple[int, ...]], bytes] = {}  # (query, types) -> its name
        self.named = 0  # names given so far (a name is never given twice)
        self.to_close: list[bytes] = []  # stale names, closed at the start of the next pipeline

    def _begin(self) -> bytes:
        connection = self.connection
        parts = [b"BEGIN"]
        if connection.isolation_level is not None:
            parts += [b"ISOLATION LEVEL", connection.isolation_level.name.replace("_", " ").encode()]
        if connection.read_only is not None:
            parts.append(b"READ ONLY" if connection.read_only else b"READ WRITE")
        if connection.deferrable is not None:
            parts.append(b"DEFERRABLE" if connection.deferrable else b"NOT DEFERRABLE")
        return b" ".join(parts)

    def run(self, statements: Sequence[Statement], end_transaction: bool) -> list[list[tuple]]:
        from psycopg import ProgrammingError, errors, pq
        from psycopg.adapt import PyFormat, Transformer

        connection, pgconn = self.connection, self.connection.pgconn
        idle = pgconn.transaction_status == pq.TransactionStatus.IDLE
        if not statements and (not end_transaction or idle):
            return []
        if pgconn.pipeline_status != pq.PipelineStatus.OFF:
            raise RuntimeError("the connection is in a pipeline already")
        transformer = Transformer(connection)
        encoding = connection.info.encoding
        # every parameter dumped before anything is sent: a bad one fails here, with nothing sent
        dumped = []
        for query, params in statements:
            text, names, binary = _numbered(query, encoding)
            missing = [name for name in names if name not in params]
            if missing:
                raise ProgrammingError(f"query parameter missing: {', '.join(missing)}")
            values = transformer.dump_sequence(
                [params[name] for name in names], [PyFormat.BINARY if b else PyFormat.AUTO for b in binary]
            )
            dumped.append((text, values, tuple(transformer.types or ()), list(transformer.formats or ())))
        # what each result answers: a command (BEGIN, COMMIT, a close), a prepare (its key), or a
        # statement (its number, and the key it ran prepared under)
        expected: list[tuple[str, Any, Any]] = []
        with connection.lock:
            pgconn.enter_pipeline_mode()
            try:
                closing, self.to_close = self.to_close, []
                for name in closing:
                    pgconn.send_close_prepared(name)  # closing a name that is gone is no error
                    expected.append(("command", None, None))
                if idle and not connection.autocommit:
                    pgconn.send_query_params(self._begin(), None)
                    expected.append(("command", None, None))
                for number, (text, values, types, formats) in enumerate(dumped):
                    key = (text, types)
                    name = self.prepared.get(key)
                    if name is None and len(self.prepared) < PREPARED_MAX:
                        self.named += 1
                        name = self.prepared[key] = f"_recoup_{self.named}".encode()  # until it fails
                        pgconn.send_prepare(name, text, param_types=types)
                        expected.append(("prepare", key, None))
                    if name is None:
                        pgconn.send_query_params(text, values, param_types=types, param_formats=formats)
                    else:
                        pgconn.send_query_prepared(name, values, param_formats=formats)
                    expected.append(("rows", number, key if name is not None else None))
                if end_transaction:
                    pgconn.send_query_params(b"COMMIT", None)
                    expected.append(("command", None, None))
                pgconn.pipeline_sync()
                results = self._communicate(pgconn, len(expected))
                pgconn.exit_pipeline_mode()
            except BaseException as exc:
                # the protocol is in an unknown state (the network failed, say): this connection is
                # done with; what this pipeline prepared is forgotten with it
                for kind, key, _ in expected:
                    if kind == "prepare":
                        self.prepared.pop(key, None)
                raise _Broken(exc) from exc
        # first every result's bookkeeping, then the rows: a row that fails to load must not leave a
        # failed prepare remembered. The first statement that failed on the server is the error, as
        # psycopg's cursors would raise it; else the first that gave no rows.
        failure: Exception | None = None
        rowless: Exception | None = None
        ok = (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK)
        for (kind, what, key), result in zip(expected, results, strict=True):
            if kind == "rows" and result.status == pq.ExecStatus.COMMAND_OK:
                rowless = rowless or ProgrammingError("the last operation didn't produce records")
            elif result.status not in ok:  # failed, or skipped after a failure (PIPELINE_ABORTED)
                if kind == "prepare":
                    self.prepared.pop(what, None)  # (gone already if an earlier failure cleared all)
                if result.status == pq.ExecStatus.FATAL_ERROR:
                    error = errors.error_from_result(result, encoding=encoding)
                    if kind == "rows" and key is not None:
                        self._forget(key, error.sqlstate)
                    failure = failure or error
                elif result.status != pq.ExecStatus.PIPELINE_ABORTED:
                    failure = failure or errors.DatabaseError(f"unexpected result: {result.status.name}")
        if failure is not None or rowless is not None:
            raise failure or rowless  # type: ignore[misc]
        out: list[list[tuple]] = [[] for _ in statements]
        for (kind, what, _), result in zip(expected, results, strict=True):
            if kind == "rows":
                transformer.set_pgresult(result)
                out[what] = transformer.load_rows(0, result.ntuples, tuple)
        return out

    def _forget(self, key: tuple[bytes, tuple[int, ...]], sqlstate: str | None) -> None:
        """A prepared statement failed: forget it if it no longer holds (`_GONE`, `_STALE`). What is
        forgotten is closed at the start of the next pipeline (closing a name the session lost is no
        error), where libpq can (PQsendClosePrepared, libpq 17 and later); elsewhere it stays on the
        server until the connection closes."""
        if sqlstate == _GONE:  # the session lost some or all of its statements: forget every name
            forgotten = list(self.prepared.values())
            self.prepared.clear()
        elif sqlstate == _STALE and key in self.prepared:
            forgotten = [self.prepared.pop(key)]
        else:
            return
        if _can_close():
            self.to_close += forgotten

    @staticmethod
    def _communicate(pgconn: Any, commands: int) -> list[Any]:
        """Send what is queued, then collect one result per command (`commands` of them) and the
        pipeline's sync."""
        from psycopg import NotSupportedError, OperationalError, pq

        poll = select.poll()
        poll.register(pgconn.socket, select.POLLIN | select.POLLOUT)
        while pgconn.flush():  # with a large batch the socket's buffer fills: read while waiting
            poll.poll()
            pgconn.consume_input()
        poll.modify(pgconn.socket, select.POLLIN)
        results: list[Any] = []
        ended = False  # the last result was the end of a command's results
        while True:
            while pgconn.is_busy():
                poll.poll()
                pgconn.consume_input()
            result = pgconn.get_result()
            if result is None:  # the end of one command's results, or a connection that broke
                if pgconn.status == pq.ConnStatus.BAD or ended:
                    message = pgconn.get_error_message()
                    if isinstance(message, bytes):
                        message = message.decode(errors="replace")
                    message = message.strip()
                    raise OperationalError(f"the connection is lost: {message or 'no result'}")
                ended = True
                continue
            ended = False
            if result.status == pq.ExecStatus.PIPELINE_SYNC:
                if len(results) != commands:
                    raise OperationalError(f"{len(results)} results for {commands} commands")
                return results
            if result.status in (pq.ExecStatus.COPY_IN, pq.ExecStatus.COPY_OUT, pq.ExecStatus.COPY_BOTH):
                raise NotSupportedError("COPY is not supported in the driver's pipeline")
            results.append(result)


_BIGINT = range(-(2**63), 2**63)
# the Python types a parameter may have to travel in an array, and the array element type; a value's
# type must be exactly one of these (bool is not taken for int, nor a subclass for its base)
_ARRAY_TYPES: dict[type, str] = {
    str: "text",
    int: "bigint",
    float: "float8",
    Decimal: "numeric",
    dt.date: "date",
}


def _kinds(members: list[dict[str, Any]]) -> dict[str, str | None] | None:
    """How each parameter travels when `members` run as one `_for_all` statement, or None if they
    cannot: the same parameter names; per parameter, values of one type (`_ARRAY_TYPES`, aware or naive
    datetimes, integers within bigint), or lists for every member of one element type (texts or
    integers; None elements allowed), or NULL for every member (kind None); and at least one value."""
    names = members[0].keys()
    if any(params.keys() != names for params in members):
        return None
    kinds: dict[str, str | None] = {}
    for name in names:
        values = [params[name] for params in members]
        present = [v for v in values if v is not None]
        if not present:
            kinds[name] = None
            continue
        if any(isinstance(v, list | tuple) for v in present):
            if len(present) != len(values) or not all(isinstance(v, list | tuple) for v in values):
                return None
            elements = {type(e) for v in values for e in v if e is not None}
            if elements == {str} or not elements:
                kinds[name] = "list:text"
            elif elements == {int} and all(e in _BIGINT for v in values for e in v if e is not None):
                kinds[name] = "list:bigint"
            else:
                return None
            continue
        types = {type(v) for v in present}
        if len(types) != 1:
            return None
        kind = types.pop()
        if kind is dt.datetime:
            zones = {v.tzinfo is None for v in present}
            if len(zones) != 1:
                return None
            kinds[name] = "timestamp" if zones.pop() else "timestamptz"
        elif kind in _ARRAY_TYPES and (kind is not int or all(v in _BIGINT for v in present)):
            kinds[name] = _ARRAY_TYPES[kind]
        else:
            return None
    if all(kind is None for kind in kinds.values()):
        return None
    return kinds


def _for_all(text: str, members: list[dict[str, Any]], kinds: dict[str, str | None]) -> Statement:
    """One statement answering `text` for each parameter set in `members` (PostgreSQL; `kinds` from
    `_kinds`).

    The parameters come as arrays, one element per member, unnested WITH ORDINALITY; `text` runs as a
    LATERAL subquery per member (fenced with OFFSET 0, so that PostgreSQL cannot flatten it into a join
    of its own choosing), its rows prefixed with the member's number. The lateral reference makes the
    join a nested loop over the members in order, and each member's rows come in the subquery's own
    order. A list parameter (an IN-list) travels as a JSON array and is an array of its element type
    again in the statement. A parameter that is NULL for every member stays an untyped NULL, so its
    type comes from where it is used, as it does alone."""
    names = tuple(members[0])
    kind_of = tuple(kinds[name] for name in names)

    def values(name: str, kind: str) -> list[Any]:
        if kind.startswith("list:"):
            return [json.dumps(list(params[name])) for params in members]
        return [params[name] for params in members]

    params = {f"a_{name}": values(name, kind) for name, kind in zip(names, kind_of, strict=True) if kind}
    return _for_all_sql(text, names, kind_of), params


@functools.lru_cache(maxsize=1024)
def _for_all_sql(text: str, names: tuple[str, ...], kinds: tuple[str | None, ...]) -> str:
    """`_for_all`'s statement text (the same for every batch whose parameters travel alike)."""
    kind = dict(zip(names, kinds, strict=True))
    arrays = [name for name in names if kind[name] is not None]

    def reference(match: re.Match) -> str:
        name = match.group(1)
        if name not in kind:
            return match.group(0)  # not one of the statement's parameters: the driver reports it
        if kind[name] is None:
            return "NULL"
        if kind[name] == "list:text":
            return f"ARRAY(SELECT json_array_elements_text(recoup_member.p_{name}))"
        if kind[name] == "list:bigint":
            return f"ARRAY(SELECT e::bigint FROM json_array_elements_text(recoup_member.p_{name}) AS e)"
        return f"recoup_member.p_{name}"

    def travels(name: str) -> str:
        return "json" if kind[name].startswith("list:") else kind[name]

    # the arrays travel in binary (%b): no quoting and escaping of every element as text
    columns = ", ".join(f"%(a_{name})b::{travels(name)}[]" for name in arrays)
    aliases = ", ".join(f"p_{name}" for name in arrays)
    return (
        f"SELECT recoup_member.member, q.* FROM unnest({columns}) WITH ORDINALITY"
        f" AS recoup_member({aliases}, member)\n"
        f"CROSS JOIN LATERAL (SELECT * FROM ({_NAMED.sub(reference, text)}\n) AS one OFFSET 0) AS q"
    )


def read_time(value: Any) -> dt.datetime | None:
    """A timestamp as either driver returns it (text on SQLite) as an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def read_money(value: Any) -> Decimal | None:
    """An amount as either driver returns it (float on SQLite) as a Decimal with 2 places."""
    if value is None:
        return None
    return Decimal(str(value)).quantize(CENT)
