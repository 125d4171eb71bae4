"""The notification dispatcher against real local HTTP receivers, on SQLite and PostgreSQL.

Time is driven by passing `now` to each round (no sleeping through backoff delays); crashes are real
exceptions escaping a round; concurrency is real threads on separate connections.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select

from oms.notify import (
    DispatchReport,
    HookTarget,
    NotifyConfigError,
    PermanentDeliveryError,
    WebhookTarget,
    backoff_delay,
    dispatch_once,
    run,
    sign,
    targets_from_config,
    verify_signature,
)
from oms.tables import NotificationOutbox, Return

pytestmark = pytest.mark.timeout(60)

OUTBOX = NotificationOutbox.__table__
T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)
SECRET = "whsec-test-0123456789abcdef"
LEASE = 300.0


# --- a real receiver -----------------------------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    path: str
    signature_valid: bool

    @property
    def event_id(self) -> str:
        return self.headers["Recoup-Event-Id"]

    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A webhook endpoint on 127.0.0.1 that answers `statuses` in order (then 200) after `delay` s."""

    statuses: list[int] = field(default_factory=list)
    delay: float = 0.0
    secret: str = SECRET
    requests: list[Received] = field(default_factory=list)
    closing: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/recoup"

    def target(self, **kwargs: Any) -> WebhookTarget:
        return WebhookTarget(url=self.url, secret=self.secret, **kwargs)

    def event_ids(self) -> list[str]:
        with self.lock:
            return [r.event_id for r in self.requests]

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers["Content-Length"]))
        headers = dict(handler.headers.items())
        valid = verify_signature(
            self.secret, headers.get("Recoup-Timestamp", ""), body, headers.get("Recoup-Signature", "")
        )
        with self.lock:
            self.requests.append(Received(headers, body, handler.path, valid))
            status = self.statuses.pop(0) if self.statuses else 200
        if self.delay:
            self.closing.wait(self.delay)
        try:
            handler.send_response(status)
            handler.send_header("Content-Length", "2")
            handler.end_headers()
            handler.wfile.write(b"ok")
        except OSError:
            pass  # the dispatcher timed out and hung up


@pytest.fixture
def start_receiver() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def start(**kwargs: Any) -> Receiver:
        receiver = Receiver(**kwargs)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.answer(self)

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.handle_error = lambda *args: None  # type: ignore[method-assign]
        receiver.server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.closing.set()
        assert receiver.server is not None
        receiver.server.shutdown()
        receiver.server.server_close()


# --- outbox rows ---------------------------------------------------------------------------------


def add_notifications(
    engine: Engine,
    *event_ids: str,
    due: dt.datetime = T0,
    kind: str = "return_authorized",
    payload: dict[str, Any] | None = None,
    state: str = "pending",
) -> None:
    # a writer takes SQLite's write lock first (as the service's units of work do): this transaction
    # reads before it writes, and a running dispatcher may commit a lease in between, which SQLite
    # refuses at once ("database is locked") to a deferred transaction, whatever its busy timeout
    with engine.execution_options(sqlite_begin="IMMEDIATE").begin() as connection:
        if connection.execute(select(Return.return_id).where(Return.return_id == "R-1")).first() is None:
            connection.execute(
                insert(Return).values(
                    return_id="R-1",
                    channel="web",
                    requested_at=T0 - dt.timedelta(days=1),
                    status="authorized",
                )
            )
        connection.execute(
            insert(OUTBOX),
            [
                {
                    "event_id": event_id,
                    "created_at": T0 - dt.timedelta(minutes=1),
                    "return_id": "R-1",
                    "kind": kind,
                    "payload": {"rma_number": "RMA-0001"} if payload is None else payload,
                    "state": state,
                    "attempts": 0,
                    "next_attempt_at": due,
                }
                for event_id in event_ids
            ],
        )


def outbox_row(engine: Engine, event_id: str) -> dict[str, Any]:
    with engine.connect() as connection:
        return dict(connection.execute(select(OUTBOX).where(OUTBOX.c.event_id == event_id)).one()._mapping)


def all_rows(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(select(OUTBOX).order_by(OUTBOX.c.event_id))]


# --- delivery ------------------------------------------------------------------------------------


def test_delivers_a_signed_notification(engine: Engine, start_receiver: Callable[..., Receiver]) -> None:
    receiver = start_receiver()
    add_notifications(engine, "ev-1")

    report = dispatch_once(engine, [receiver.target()], now=T0)

    assert report.delivered == ["ev-1"] and report.claimed == 1
    row = outbox_row(engine, "ev-1")
    assert (row["state"], row["attempts"], row["delivered_at"], row["last_error"]) == (
        "delivered",
        1,
        T0,
        None,
    )
    [request] = receiver.requests
    assert request.signature_valid
    assert request.path == "/hooks/recoup"
    assert request.headers["Content-Type"] == "application/json"
    assert request.event_id == "ev-1"
    assert request.json() == {
        "event_id": "ev-1",
        "kind": "return_authorized",
        "return_id": "R-1",
        "created_at": "2030-01-01T11:59:00+00:00",
        "payload": {"rma_number": "RMA-0001"},
    }
    timestamp = request.headers["Recoup-Timestamp"]
    assert abs(int(timestamp) - time.time()) < 60
    assert request.headers["Recoup-Signature"] == sign(SECRET, timestamp, request.body)
    assert not verify_signature(
        "another-secret", timestamp, request.body, request.headers["Recoup-Signature"]
    )


def test_a_failing_receiver_is_retried_with_growing_delays_until_it_accepts(
    engine: Engine, start_receiver: Callable[..., Receiver]
) -> None:
    receiver = start_receiver(statuses=[500, 502, 503])
    add_notifications(engine, "ev-1")
    now, delays = T0, []

    for attempt in (1, 2, 3):
        assert dispatch_once(engine, [receiver.target()], now=now, base_delay=2.0).retried == ["ev-1"]
        row = outbox_row(engine, "ev-1")
        assert (row["state"], row["attempts"]) == ("pending", attempt)
        assert f"HTTP {[500, 502, 503][attempt - 1]}" in row["last_error"]
        delays.append((row["next_attempt_at"] - now).total_seconds())
        # Not due a microsecond early.
        early = row["next_attempt_at"] - dt.timedelta(microseconds=1)
        assert dispatch_once(engine, [receiver.target()], now=early).claimed == 0
        now = row["next_attempt_at"]

    assert 1.0 <= delays[0] <= 2.0 <= delays[1] <= 4.0 <= delays[2] <= 8.0
    assert dispatch_once(engine, [receiver.target()], now=now).delivered == ["ev-1"]
    row = outbox_row(engine, "ev-1")
    assert (row["state"], row["attempts"], row["delivered_at"], row["last_error"]) == (
        "delivered",
        4,
        now,
        None,
    )
    assert receiver.event_ids() == ["ev-1"] * 4
    assert all(r.signature_valid for r in receiver.requests)


RETRYABLE = [408, 429, 500, 502, 503, 504]
PERMANENT = [301, 400, 401, 403, 404, 410, 422]


def test_which_statuses_are_retried(engine: Engine, start_receiver: Callable[..., Receiver]) -> None:
    statuses = sorted(RETRYABLE + PERMANENT)
    receiver = start_receiver(statuses=statuses)  # rows go out in event-id order: one status each
    add_notifications(engine, *(f"s{status}" for status in statuses))

    report = dispatch_once(engine, [receiver.target()], now=T0)

    assert report.retried == [f"s{status}" for status in RETRYABLE]
    assert report.failed == [f"s{status}" for status in PERMANENT]
    for status in statuses:
        row = outbox_row(engine, f"s{status}")
        assert f"HTTP {status}" in row["last_error"]
        assert row["attempts"] == 1 and row["delivered_at"] is None
        if status in RETRYABLE:
            assert row["state"] == "pending" and row["next_attempt_at"] > T0
        else:
            assert row["state"] == "failed"
    # A permanent failure is never tried again; the retryable ones are.
    later = dispatch_once(engine, [receiver.target()], now=T0 + dt.timedelta(days=30))
    assert later.delivered == [f"s{status}" for status in RETRYABLE]
    assert Counter(receiver.event_ids()) == Counter(
        [f"s{status}" for status in PERMANENT] + [f"s{status}" for status in RETRYABLE] * 2
    )


def test_a_receiver_that_times_out_is_retried(
    engine: Engine, start_receiver: Callable[..., Receiver]
) -> None:
    receiver = start_receiver(delay=10.0)
    add_notifications(engine, "ev-1")

    started = time.monotonic()
    report = dispatch_once(engine, [receiver.target(timeout=0.3)], now=T0)

    assert time.monotonic() - started < 3.0
    assert report.retried == ["ev-1"]
    row = outbox_row(engine, "ev-1")
    assert row["state"] == "pending" and row["attempts"] == 1
    assert "timed out after 0.3s" in row["last_error"]


def test_an_unreachable_receiver_is_retried(engine: Engine) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago and has no listener now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    add_notifications(engine, "ev-1")

    report = dispatch_once(engine, [WebhookTarget(f"http://127.0.0.1:{port}/", SECRET, timeout=2)], now=T0)

    assert report.retried == ["ev-1"]
    assert "connection failed" in outbox_row(engine, "ev-1")["last_error"]


def test_max_attempts_marks_the_row_failed(engine: Engine, start_receiver: Callable[..., Receiver]) -> None:
    receiver = start_receiver(statuses=[503] * 10)
    add_notifications(engine, "ev-1")
    now = T0

    reports = []
    for _ in range(3):
        reports.append(dispatch_once(engine, [receiver.target()], now=now, max_attempts=3))
        now = outbox_row(engine, "ev-1")["next_attempt_at"]

    assert [r.retried for r in reports[:2]] == [["ev-1"], ["ev-1"]] and reports[2].failed == ["ev-1"]
    row = outbox_row(engine, "ev-1")
    assert (row["state"], row["attempts"]) == ("failed", 3)
    assert "gave up after 3 attempts" in row["last_error"] and "HTTP 503" in row["last_error"]
    assert dispatch_once(engine, [receiver.target()], now=T0 + dt.timedelta(days=30)).claimed == 0
    assert len(receiver.requests) == 3


# --- crashes, leases and concurrency -------------------------------------------------------------


class SimulatedCrash(BaseException):
    """Escapes the round like a kill would: after the POST, before the outcome is written."""


def crash(_notification: dict[str, Any]) -> None:
    raise SimulatedCrash


def test_a_crash_after_the_post_redelivers_with_the_same_event_id(
    engine: Engine, start_receiver: Callable[..., Receiver]
) -> None:
    receiver = start_receiver()
    add_notifications(engine, "ev-1")

    with pytest.raises(SimulatedCrash):
        dispatch_once(engine, [receiver.target(), HookTarget("crash", crash)], now=T0, lease_s=LEASE)

    row = outbox_row(engine, "ev-1")
    lease_end = T0 + dt.timedelta(seconds=LEASE)
    assert (row["state"], row["attempts"], row["next_attempt_at"]) == ("pending", 1, lease_end)
    # Held by the dead dispatcher's lease until it expires, then due again.
    assert dispatch_once(engine, [receiver.target()], now=lease_end - dt.timedelta(seconds=1)).claimed == 0
    assert dispatch_once(engine, [receiver.target()], now=lease_end).delivered == ["ev-1"]

    assert outbox_row(engine, "ev-1")["attempts"] == 2
    first, second = receiver.requests
    assert first.event_id == second.event_id == "ev-1"
    assert first.json() == second.json()
    assert first.signature_valid and second.signature_valid
    assert {r.event_id for r in receiver.requests} == {"ev-1"}  # what a receiver deduplicates on


def test_a_crash_on_the_last_attempt_fails_the_row_without_another_post(
    engine: Engine, start_receiver: Callable[..., Receiver]
) -> None:
    receiver = start_receiver()
    add_notifications(engine, "ev-1")
    with pytest.raises(SimulatedCrash):
        dispatch_once(engine, [receiver.target(), HookTarget("crash", crash)], now=T0, max_attempts=1)

    report = dispatch_once(engine, [receiver.target()], now=T0 + dt.timedelta(seconds=LEASE), max_attempts=1)

    assert report.failed == ["ev-1"]
    row = outbox_row(engine, "ev-1")
    assert (row["state"], row["attempts"]) == ("failed", 1)
    assert "never reported an outcome" in row["last_error"]
    assert receiver.event_ids() == ["ev-1"]


def test_a_dispatcher_that_lost_its_lease_does_not_overwrite_the_newer_claim(
    engine: Engine, start_receiver: Callable[..., Receiver]
) -> None:
    receiver = start_receiver(statuses=[200, 500])  # the first dispatcher's POST succeeds, the second's not
    add_notifications(engine, "ev-1")
    taken_over_at = T0 + dt.timedelta(seconds=LEASE)
    later: list[DispatchReport] = []

    def slow_gateway(_notification: dict[str, Any]) -> None:
        # While this (first) dispatcher is still busy, its lease runs out and another one takes over.
        later.append(dispatch_once(engine, [receiver.target()], now=taken_over_at))

    first = dispatch_once(
        engine, [receiver.target(), HookTarget("slow", slow_gateway)], now=T0, lease_s=LEASE
    )

    assert later[0].retried == ["ev-1"]
    assert first.lost == ["ev-1"] and first.claimed == 1
    # The row keeps the newer claim's outcome: a retry, not the first dispatcher's "delivered".
    row = outbox_row(engine, "ev-1")
    assert (row["state"], row["attempts"], row["delivered_at"]) == ("pending", 2, None)
    assert row["next_attempt_at"] > taken_over_at and "HTTP 500" in row["last_error"]
    assert receiver.event_ids() == ["ev-1", "ev-1"]


def test_concurrent_dispatchers_deliver_each_row_once(
    engine: Engine, start_receiver: Callable[..., Receiver]
) -> None:
    receiver = start_receiver(delay=0.005)
    event_ids = [f"ev-{n:02d}" for n in range(30)]
    add_notifications(engine, *event_ids)
    barrier = threading.Barrier(3)
    reports: list[DispatchReport] = []
    errors: list[BaseException] = []

    def dispatcher() -> None:
        try:
            barrier.wait()
            total = DispatchReport()
            while (report := dispatch_once(engine, [receiver.target()], now=T0, batch=4)).claimed:
                total += report
            reports.append(total)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=dispatcher) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert not errors
    assert Counter(receiver.event_ids()) == Counter(event_ids)
    delivered = [event_id for report in reports for event_id in report.delivered]
    assert sorted(delivered) == event_ids
    assert all(not (r.retried or r.failed or r.lost or r.released) for r in reports)
    assert {(r["state"], r["attempts"]) for r in all_rows(engine)} == {("delivered", 1)}


def test_two_simultaneous_rounds_claim_disjoint_rows(
    engine: Engine, start_receiver: Callable[..., Receiver]
) -> None:
    receiver = start_receiver(delay=0.01)
    event_ids = [f"ev-{n:02d}" for n in range(12)]
    add_notifications(engine, *event_ids)
    barrier = threading.Barrier(2)
    reports: list[DispatchReport] = []

    def one_round() -> None:
        barrier.wait()
        reports.append(dispatch_once(engine, [receiver.target()], now=T0, batch=8))

    threads = [threading.Thread(target=one_round) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    first, second = (set(r.delivered) for r in reports)
    assert not first & second
    assert first | second == set(event_ids)
    assert all(len(r.delivered) <= 8 for r in reports)
    assert Counter(receiver.event_ids()) == Counter(event_ids)


def test_a_lease_running_out_releases_rows_not_yet_started(
    engine: Engine, start_receiver: Callable[..., Receiver]
) -> None:
    receiver = start_receiver(delay=0.25)
    event_ids = [f"ev-{n}" for n in range(5)]
    add_notifications(engine, *event_ids)

    report = dispatch_once(engine, [receiver.target(timeout=0.5)], now=T0, lease_s=1.0)

    assert report.delivered and report.released
    assert sorted(report.delivered + report.released) == event_ids
    assert sorted(receiver.event_ids()) == sorted(report.delivered)
    for event_id in report.released:
        row = outbox_row(engine, event_id)
        assert (row["state"], row["attempts"], row["next_attempt_at"]) == ("pending", 0, T0)


def test_rows_not_yet_due_are_left_alone(engine: Engine, start_receiver: Callable[..., Receiver]) -> None:
    receiver = start_receiver()
    add_notifications(engine, "due")
    add_notifications(engine, "later", due=T0 + dt.timedelta(seconds=1))
    add_notifications(engine, "done", due=T0 - dt.timedelta(hours=1), state="delivered")
    add_notifications(engine, "dead", due=T0 - dt.timedelta(hours=1), state="failed")
    before = {r["event_id"]: r for r in all_rows(engine)}

    assert dispatch_once(engine, [receiver.target()], now=T0).delivered == ["due"]

    after = {r["event_id"]: r for r in all_rows(engine)}
    assert after["due"]["state"] == "delivered"
    assert {k: after[k] for k in ("later", "done", "dead")} == {
        k: before[k] for k in ("later", "done", "dead")
    }
    assert receiver.event_ids() == ["due"]


# --- hooks ---------------------------------------------------------------------------------------


def test_hooks_receive_the_notification(engine: Engine, start_receiver: Callable[..., Receiver]) -> None:
    receiver = start_receiver()
    add_notifications(engine, "ev-1", kind="refund_issued", payload={"amount": "12.50", "currency": "EUR"})
    sent: list[dict[str, Any]] = []

    report = dispatch_once(engine, [HookTarget("sms", sent.append), receiver.target()], now=T0)

    assert report.delivered == ["ev-1"]
    assert sent == [receiver.requests[0].json()]
    assert sent[0]["kind"] == "refund_issued" and sent[0]["payload"] == {"amount": "12.50", "currency": "EUR"}


def test_hook_failures_retry_or_fail(engine: Engine) -> None:
    add_notifications(engine, "flaky", "hopeless")

    def gateway(notification: dict[str, Any]) -> None:
        if notification["event_id"] == "flaky":
            raise ConnectionError("gateway down")
        raise PermanentDeliveryError("customer has no phone number")

    report = dispatch_once(engine, [HookTarget("sms", gateway)], now=T0)

    assert (report.retried, report.failed) == (["flaky"], ["hopeless"])
    assert outbox_row(engine, "flaky")["last_error"] == "sms: ConnectionError: gateway down"
    hopeless = outbox_row(engine, "hopeless")
    assert hopeless["state"] == "failed"
    assert hopeless["last_error"] == "sms: PermanentDeliveryError: customer has no phone number"


# --- secrets and configuration -------------------------------------------------------------------


def test_secrets_stay_out_of_errors_and_logs(
    engine: Engine, start_receiver: Callable[..., Receiver], caplog: pytest.LogCaptureFixture
) -> None:
    receiver = start_receiver(statuses=[500], secret="sig-secret-DO-NOT-LOG")
    target = WebhookTarget(f"{receiver.url}?token=query-token-DO-NOT-LOG", "sig-secret-DO-NOT-LOG", timeout=2)
    add_notifications(engine, "ev-1")

    with caplog.at_level(logging.DEBUG, logger="oms.notify"):
        assert dispatch_once(engine, [target], now=T0, max_attempts=1).failed == ["ev-1"]

    assert receiver.requests[0].path.endswith("?token=query-token-DO-NOT-LOG")
    assert receiver.requests[0].signature_valid
    error = outbox_row(engine, "ev-1")["last_error"]
    assert "HTTP 500" in error and "127.0.0.1" in error
    assert caplog.text and "HTTP 500" in caplog.text
    for leak in (error, caplog.text, repr(target), str(target)):
        assert "DO-NOT-LOG" not in leak


def test_targets_from_config_parses_a_url_list() -> None:
    targets = targets_from_config(" https://a.example/hook , http://10.0.0.5:8080/recoup?x=1 ", "s3cret")
    assert [t.url for t in targets] == ["https://a.example/hook", "http://10.0.0.5:8080/recoup?x=1"]
    assert {t.secret for t in targets} == {"s3cret"}
    assert targets_from_config("", "") == [] and targets_from_config("  ", "s3cret") == []


@pytest.mark.parametrize(
    ("urls", "message"),
    [
        ("ftp://a.example/x", "entry 1 ('ftp://a.example/x'): must start with http:// or https://"),
        ("https://a.example, a.example/hook", "entry 2 ('://a.example/hook'): must start with http://"),
        ("https://", "entry 1 ('https://'): has no host"),
        ("https://a.example:99999/", "entry 1 ('<malformed URL>'): not a valid URL"),
        ("https://a.example,,https://b.example", "entry 2 is empty"),
        ("https://a.example,", "entry 2 is empty"),
        ("https://a.example/x,https://a.example/x", "entry 2 ('https://a.example/x') is listed twice"),
        ("https://user:pw@a.example/", "entry 1 ('https://a.example/'): must not carry credentials"),
        ("https://a.example/x y", "contains whitespace"),
    ],
)
def test_targets_from_config_names_the_malformed_entry(urls: str, message: str) -> None:
    with pytest.raises(NotifyConfigError, match="RECOUP_WEBHOOK_URLS") as caught:
        targets_from_config(urls, "s3cret")
    assert message in str(caught.value)
    assert "pw" not in str(caught.value)


def test_webhooks_need_a_secret_and_rounds_need_targets(engine: Engine) -> None:
    with pytest.raises(NotifyConfigError, match="RECOUP_WEBHOOK_SECRET must be set"):
        targets_from_config("https://a.example/", " ")
    with pytest.raises(NotifyConfigError, match="no notification targets"):
        dispatch_once(engine, [], now=T0)
    with pytest.raises(ValueError, match="lease_s=5 is too short"):
        dispatch_once(engine, [WebhookTarget("https://a.example/", "s", timeout=10)], lease_s=5)


def test_verify_signature_rejects_tampering_and_stale_timestamps() -> None:
    body = b'{"event_id":"ev-1"}'
    now = 1_900_000_000
    signature = sign(SECRET, now, body)
    assert signature.startswith("sha256=") and len(signature) == 7 + 64
    assert verify_signature(SECRET, str(now), body, signature, now=now)
    assert verify_signature(SECRET, now, body.decode(), signature, now=now + 299)
    assert not verify_signature(SECRET, now, body, signature, now=now + 301)
    assert not verify_signature(SECRET, now, body + b" ", signature, now=now)
    assert not verify_signature(SECRET, now + 1, body, signature, now=now)
    assert not verify_signature("other", now, body, signature, now=now)
    assert not verify_signature(SECRET, now, body, signature.removeprefix("sha256="), now=now)
    assert not verify_signature(SECRET, "yesterday", body, signature, now=now)


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    for attempts, low, high in [(1, 1, 2), (2, 2, 4), (5, 16, 32), (30, 1800, 3600)]:
        delays = [backoff_delay(attempts, base_delay=2, max_delay=3600) for _ in range(200)]
        assert all(low <= d <= high for d in delays)
        assert len(set(delays)) > 1


# --- the loop ------------------------------------------------------------------------------------


def test_run_delivers_on_the_real_clock_until_stopped(
    engine: Engine, start_receiver: Callable[..., Receiver]
) -> None:
    receiver = start_receiver()
    stop = threading.Event()
    result: list[DispatchReport] = []
    loop = threading.Thread(
        target=lambda: result.append(run(engine, [receiver.target()], interval=0.05, stop_event=stop))
    )
    loop.start()
    add_notifications(engine, "ev-1", "ev-2", due=dt.datetime.now(dt.UTC))
    deadline = time.monotonic() + 10
    while len(receiver.requests) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    loop.join(10)

    assert not loop.is_alive()
    assert sorted(result[0].delivered) == ["ev-1", "ev-2"]
    assert {r["state"] for r in all_rows(engine)} == {"delivered"}
    add_notifications(engine, "ev-3", due=dt.datetime.now(dt.UTC))
    assert run(engine, [receiver.target()], once=True).delivered == ["ev-3"]
