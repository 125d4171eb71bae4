"""The notification dispatcher: delivers `notifications_outbox` rows to signed webhooks and to
email/SMS hooks, retrying with backoff, at least once, idempotent by event id (`recoup notify`).

Delivery
    Each round claims due rows (`state = 'pending' AND next_attempt_at <= now`) and sends every row to
    every target. 2xx from a webhook and a normal return from a hook count as delivered; HTTP 408, 429,
    5xx, timeouts, connection errors and hook exceptions are retried with exponential backoff and jitter
    until `max_attempts`; any other status (4xx, and 3xx: redirects are not followed) and a hook raising
    `PermanentDeliveryError` fail the row at once. A row goes to all targets on every attempt, so a
    target that accepted an earlier attempt sees the event again: receivers deduplicate by event id.

Claims and leases
    A claim sets `next_attempt_at` to the end of a lease (`now + lease_s`) and counts the attempt, in
    one short transaction: `SELECT ... FOR UPDATE SKIP LOCKED` then an UPDATE of those ids on
    PostgreSQL, a single `UPDATE ... WHERE event_id IN (SELECT ... LIMIT n)` under SQLite's write lock.
    The lease end is the claim's token: the outcome is written only `WHERE next_attempt_at = <token>`,
    so a dispatcher that lost its lease cannot overwrite a newer claim, and a row whose dispatcher died
    becomes due again when its lease expires (its unfinished attempt counts towards `max_attempts`).
    A round stops starting deliveries when the rest of its lease could not cover one more notification
    (the sum of the targets' timeouts) and hands the unstarted rows back, due at once.

Webhook requests and their signature
    POST <url> with the JSON body {"event_id", "kind", "return_id", "created_at", "payload"} and headers
        Content-Type: application/json
        Recoup-Event-Id: <event_id>           (the same on every redelivery: deduplicate on it)
        Recoup-Timestamp: <unix seconds when sent>
        Recoup-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>
    A receiver recomputes the HMAC over the timestamp header, a dot and the raw body bytes exactly as
    received (before parsing the JSON), compares it in constant time, and rejects timestamps more than
    five minutes from its own clock (replays); `verify_signature` below is a copyable implementation.

Secrets (the signing secret, a URL's query string) never reach logs or `last_error`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import http.client
import json
import logging
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from sqlalchemy import Engine, select, update
from sqlalchemy.exc import DBAPIError

from oms.errors import RecoupError
from oms.tables import NotificationOutbox

logger = logging.getLogger(__name__)

OUTBOX = NotificationOutbox.__table__
SIGNATURE_SCHEME = "sha256"
USER_AGENT = "Recoup-Notify/1"
MAX_ERROR_CHARS = 2000
RETRYABLE_STATUSES = frozenset({408, 429})

Notification = dict[str, Any]
Hook = Callable[[Notification], object]


class NotifyConfigError(RecoupError):
    """The notification targets are misconfigured (a malformed webhook URL, a missing secret)."""


class PermanentDeliveryError(Exception):
    """Raised by a hook when retrying cannot help (e.g. the customer has no phone number)."""


# --- targets -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookTarget:
    """An HTTPS (or HTTP) endpoint that receives signed POSTs; `timeout` is per socket operation."""

    url: str
    secret: str = field(repr=False)
    timeout: float = 10.0

    def __post_init__(self) -> None:
        problem = _url_problem(self.url)
        if problem:
            raise NotifyConfigError(f"webhook URL {redact_url(self.url)!r}: {problem}")
        if not self.secret.strip():
            raise NotifyConfigError(f"webhook {redact_url(self.url)!r} has no signing secret")
        if self.timeout <= 0:
            raise NotifyConfigError(f"webhook {redact_url(self.url)!r}: timeout must be positive")

    @property
    def name(self) -> str:
        return redact_url(self.url)

    def __repr__(self) -> str:
        return f"WebhookTarget(url={self.name!r}, timeout={self.timeout})"


@dataclass(frozen=True)
class HookTarget:
    """A callable that sends the notification another way (an email or SMS gateway client).

    The hook receives a copy of the notification dict (the webhook body); returning means delivered,
    raising `PermanentDeliveryError` means give up, any other exception means retry. `timeout` is how
    long the hook may take, used to size the claim lease; the hook must enforce it itself.
    """

    name: str
    hook: Hook = field(repr=False)
    timeout: float = 10.0


Target = WebhookTarget | HookTarget


def redact_url(url: str) -> str:
    """The URL without credentials, query or fragment: safe to log (tokens often live in queries)."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<malformed URL>"
    if ":" in host:
        host = f"[{host}]"
    query = "?…" if parts.query else ""
    return f"{parts.scheme}://{host}{port}{parts.path}{query}"


def _url_problem(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    if url != url.strip() or any(c.isspace() for c in url):
        return "contains whitespace"
    if parts.scheme not in ("http", "https"):
        return "must start with http:// or https://"
    if not parts.hostname:
        return "has no host"
    if port == 0:
        return "port 0 is not a valid destination"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials (user:password@); requests are authenticated by their signature"
    if parts.fragment:
        return "must not have a #fragment"
    return None


def targets_from_config(webhook_urls: str, secret: str, *, timeout: float = 10.0) -> list[WebhookTarget]:
    """Webhook targets from a comma-separated URL list (RECOUP_WEBHOOK_URLS) and RECOUP_WEBHOOK_SECRET.

    An empty list gives no targets; a malformed, duplicated or empty entry is refused, naming it.
    """
    if not webhook_urls.strip():
        return []
    entries = [entry.strip() for entry in webhook_urls.split(",")]
    if not secret.strip():
        raise NotifyConfigError("RECOUP_WEBHOOK_SECRET must be set when RECOUP_WEBHOOK_URLS is")
    seen: set[str] = set()
    targets = []
    for number, url in enumerate(entries, start=1):
        where = f"RECOUP_WEBHOOK_URLS entry {number}"
        if not url:
            raise NotifyConfigError(f"{where} is empty (two commas in a row, or a trailing comma?)")
        problem = _url_problem(url)
        if problem:
            raise NotifyConfigError(f"{where} ({redact_url(url)!r}): {problem}")
        if url in seen:
            raise NotifyConfigError(f"{where} ({redact_url(url)!r}) is listed twice")
        seen.add(url)
        targets.append(WebhookTarget(url=url, secret=secret, timeout=timeout))
    return targets


# --- the signature -------------------------------------------------------------------------------


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """The `Recoup-Signature` header value for `body` sent at `timestamp` (unix seconds)."""
    message = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_SCHEME}={digest}"


def verify_signature(
    secret: str,
    timestamp: str | int,
    body: bytes | str,
    signature: str,
    tolerance_s: float = 300,
    *,
    now: float | None = None,
) -> bool:
    """True if `signature` (the Recoup-Signature header) signs `body` at `timestamp` (Recoup-Timestamp)
    with `secret`, and the timestamp is within `tolerance_s` seconds of `now` (default: this clock).

    Receivers can copy this function: it needs only `hashlib`, `hmac` and `time`.
    """
    try:
        sent_at = int(timestamp)
    except (TypeError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - sent_at) > tolerance_s:
        return False
    raw = body.encode() if isinstance(body, str) else body
    expected = hmac.new(secret.encode(), f"{sent_at}.".encode() + raw, hashlib.sha256).hexdigest()
    scheme, _, digest = signature.strip().partition("=")
    return scheme == SIGNATURE_SCHEME and hmac.compare_digest(digest.encode(), expected.encode())


# --- one delivery --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """What one target said about one notification."""

    target: str
    outcome: Literal["delivered", "retry", "permanent"]
    detail: str = ""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # urllib would turn a redirected POST into a bodiless GET; a redirect is reported instead.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def notification_body(notification: Notification) -> bytes:
    """The exact bytes POSTed (and signed): compact JSON with sorted keys, UTF-8."""
    return json.dumps(
        notification, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    ).encode()


def post_webhook(target: WebhookTarget, notification: Notification) -> Attempt:
    """POST one signed notification to one webhook and classify the answer."""
    body = notification_body(notification)
    timestamp = int(time.time())
    request = urllib.request.Request(
        target.url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Recoup-Event-Id": str(notification["event_id"]),
            "Recoup-Timestamp": str(timestamp),
            "Recoup-Signature": sign(target.secret, timestamp, body),
        },
    )
    try:
        with _OPENER.open(request, timeout=target.timeout) as response:
            response.read(65536)
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
        exc.close()
    except (TimeoutError, urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        return Attempt(target.name, "retry", _describe_network_error(exc, target.timeout))
    if 200 <= status < 300:
        return Attempt(target.name, "delivered", f"HTTP {status}")
    if status >= 500 or status in RETRYABLE_STATUSES:
        return Attempt(target.name, "retry", f"HTTP {status}")
    if 300 <= status < 400:
        return Attempt(target.name, "permanent", f"HTTP {status} (redirects are not followed)")
    return Attempt(target.name, "permanent", f"HTTP {status}")


def _describe_network_error(exc: BaseException, timeout: float) -> str:
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, TimeoutError):
        return f"timed out after {timeout:g}s"
    if isinstance(reason, OSError) and reason.strerror:
        return f"connection failed: {reason.strerror}"
    return f"connection failed: {type(reason).__name__}: {reason}"


def call_hook(target: HookTarget, notification: Notification) -> Attempt:
    """Call one hook with a copy of the notification and classify how it ended."""
    try:
        target.hook(json.loads(json.dumps(notification, default=str)))
    except PermanentDeliveryError as exc:
        return Attempt(target.name, "permanent", f"{type(exc).__name__}: {exc}")
    except Exception as exc:
        return Attempt(target.name, "retry", f"{type(exc).__name__}: {exc}")
    return Attempt(target.name, "delivered")


def deliver(targets: Sequence[Target], notification: Notification) -> list[Attempt]:
    """Send one notification to every target, in order."""
    return [
        post_webhook(t, notification) if isinstance(t, WebhookTarget) else call_hook(t, notification)
        for t in targets
    ]


# --- rounds --------------------------------------------------------------------------------------


@dataclass
class DispatchReport:
    """Event ids by what one round (or several, added up) did with them."""

    delivered: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    # Claimed but not attempted because the lease was running out: due again at once.
    released: list[str] = field(default_factory=list)
    # Attempted, but the lease had expired and another dispatcher had claimed the row meanwhile.
    lost: list[str] = field(default_factory=list)

    @property
    def claimed(self) -> int:
        return (
            len(self.delivered) + len(self.retried) + len(self.failed) + len(self.released) + len(self.lost)
        )

    def __add__(self, other: DispatchReport) -> DispatchReport:
        return DispatchReport(
            self.delivered + other.delivered,
            self.retried + other.retried,
            self.failed + other.failed,
            self.released + other.released,
            self.lost + other.lost,
        )

    def __str__(self) -> str:
        return (
            f"claimed {self.claimed}: delivered {len(self.delivered)}, retrying {len(self.retried)}, "
            f"failed {len(self.failed)}, released {len(self.released)}, lost {len(self.lost)}"
        )


def backoff_delay(
    attempts: int, *, base_delay: float, max_delay: float, rng: random.Random | None = None
) -> float:
    """Seconds to wait after the `attempts`-th failure: base·2^(attempts-1), capped, with "equal jitter"
    (uniform in the upper half), so delays grow and dispatchers that failed together spread out."""
    ceiling = min(max_delay, base_delay * 2 ** min(attempts - 1, 62))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


def _utc(moment: dt.datetime | None) -> dt.datetime:
    if moment is None:
        return dt.datetime.now(dt.UTC)
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def _claim(engine: Engine, now: dt.datetime, lease_until: dt.datetime, batch: int) -> list[dict[str, Any]]:
    """Lease up to `batch` due rows to this dispatcher and count their attempt, in one transaction."""
    due = (OUTBOX.c.state == "pending") & (OUTBOX.c.next_attempt_at <= now)
    candidates = (
        select(OUTBOX.c.event_id)
        .where(due)
        .order_by(OUTBOX.c.next_attempt_at, OUTBOX.c.event_id)
        .limit(batch)
    )
    claim = (
        update(OUTBOX)
        .values(next_attempt_at=lease_until, attempts=OUTBOX.c.attempts + 1)
        .returning(
            OUTBOX.c.event_id,
            OUTBOX.c.created_at,
            OUTBOX.c.return_id,
            OUTBOX.c.kind,
            OUTBOX.c.payload,
            OUTBOX.c.attempts,
        )
    )
    with engine.begin() as connection:
        if connection.dialect.name == "sqlite":
            # One statement, run under SQLite's database write lock: no other claim can interleave.
            claim = claim.where(OUTBOX.c.event_id.in_(candidates), due)
        else:
            # Lock first, then update by id: with the LIMIT subquery inside the UPDATE, PostgreSQL's
            # recheck of concurrently updated rows can re-run the subquery and claim more than `batch`.
            event_ids = connection.scalars(candidates.with_for_update(skip_locked=True)).all()
            if not event_ids:
                return []
            claim = claim.where(OUTBOX.c.event_id.in_(event_ids), due)
        rows = [dict(row._mapping) for row in connection.execute(claim)]
    return sorted(rows, key=lambda row: (row["created_at"], row["event_id"]))


def _finish(engine: Engine, event_id: str, token: dt.datetime, **values: Any) -> bool:
    """Write a claimed row's outcome if the claim is still ours; False if the lease was lost."""
    statement = (
        update(OUTBOX)
        .where(
            OUTBOX.c.event_id == event_id,
            OUTBOX.c.state == "pending",
            OUTBOX.c.next_attempt_at == token,
        )
        .values(**values)
    )
    with engine.begin() as connection:
        return connection.execute(statement).rowcount == 1


def _redact(text: str, targets: Sequence[Target]) -> str:
    for target in targets:
        if isinstance(target, WebhookTarget):
            text = text.replace(target.secret, "[secret]")
            if target.url != target.name:
                text = text.replace(target.url, target.name)
    return text[:MAX_ERROR_CHARS]


def dispatch_once(
    engine: Engine,
    targets: Sequence[Target],
    *,
    now: dt.datetime | None = None,
    batch: int = 100,
    max_attempts: int = 8,
    base_delay: float = 2.0,
    max_delay: float = 3600.0,
    lease_s: float = 300.0,
) -> DispatchReport:
    """One round: claim up to `batch` due rows, deliver each to every target, record the outcomes.

    `now` is the round's clock (default: the current UTC time); tests pass it to move time.
    """
    if not targets:
        raise NotifyConfigError("no notification targets are configured (set RECOUP_WEBHOOK_URLS)")
    if batch < 1 or max_attempts < 1 or base_delay <= 0 or max_delay < base_delay:
        raise ValueError("need batch >= 1, max_attempts >= 1 and 0 < base_delay <= max_delay")
    row_budget = sum(target.timeout for target in targets)
    if lease_s < 2 * row_budget:
        raise ValueError(
            f"lease_s={lease_s:g} is too short: one notification may take {row_budget:g}s "
            "across the targets' timeouts; use at least twice that"
        )

    def clock() -> dt.datetime:
        return _utc(now)

    started = time.monotonic()
    round_start = clock()
    token = round_start + dt.timedelta(seconds=lease_s)
    report = DispatchReport()
    for row in _claim(engine, round_start, token, batch):
        event_id = row["event_id"]
        if row["attempts"] > max_attempts:
            # An earlier claim never reported back (its dispatcher died mid-delivery) on the last attempt.
            error = f"gave up after {max_attempts} attempts; the last one never reported an outcome"
            if _finish(engine, event_id, token, state="failed", attempts=max_attempts, last_error=error):
                report.failed.append(event_id)
            else:
                report.lost.append(event_id)
            continue
        if time.monotonic() - started + row_budget > lease_s:
            if _finish(engine, event_id, token, next_attempt_at=round_start, attempts=row["attempts"] - 1):
                report.released.append(event_id)
            else:
                report.lost.append(event_id)
            continue

        notification = {
            "event_id": event_id,
            "kind": row["kind"],
            "return_id": row["return_id"],
            "created_at": row["created_at"].isoformat(),
            "payload": row["payload"] or {},
        }
        attempts = deliver(targets, notification)
        problems = [a for a in attempts if a.outcome != "delivered"]
        error = _redact("; ".join(f"{a.target}: {a.detail}" for a in problems), targets) or None
        if not problems:
            outcome, values = "delivered", {"state": "delivered", "delivered_at": clock(), "last_error": None}
        elif any(a.outcome == "retry" for a in problems) and row["attempts"] < max_attempts:
            delay = backoff_delay(row["attempts"], base_delay=base_delay, max_delay=max_delay)
            next_at = clock() + dt.timedelta(seconds=delay)
            outcome, values = "retried", {"next_attempt_at": next_at, "last_error": error}
        else:
            if all(a.outcome == "retry" for a in problems):
                error = _redact(f"gave up after {row['attempts']} attempts; last: {error}", targets)
            outcome, values = "failed", {"state": "failed", "last_error": error}

        if not _finish(engine, event_id, token, **values):
            logger.warning("notification %s: lease expired before its outcome was recorded", event_id)
            report.lost.append(event_id)
            continue
        getattr(report, outcome).append(event_id)
        if error:
            log = logger.warning if outcome == "failed" else logger.info
            log(
                "notification %s (%s) %s, attempt %d: %s",
                event_id,
                row["kind"],
                outcome,
                row["attempts"],
                error,
            )
    return report


def run(
    engine: Engine,
    targets: Sequence[Target],
    *,
    interval: float = 2.0,
    once: bool = False,
    stop_event: threading.Event | None = None,
    batch: int = 100,
    max_attempts: int = 8,
    base_delay: float = 2.0,
    max_delay: float = 3600.0,
    lease_s: float = 300.0,
) -> DispatchReport:
    """Dispatch until `stop_event` is set (or one round with `once`); returns the rounds' total.

    A full batch is followed at once by the next round (draining a backlog); otherwise the loop waits
    `interval` seconds. In the loop, a round that fails on the database (a restart, a lost connection) is logged and
    retried after `interval`.
    """
    if not targets:
        raise NotifyConfigError("no notification targets are configured (set RECOUP_WEBHOOK_URLS)")
    stop = stop_event or threading.Event()
    options = dict(
        batch=batch, max_attempts=max_attempts, base_delay=base_delay, max_delay=max_delay, lease_s=lease_s
    )
    total = DispatchReport()
    logger.info("dispatching notifications to %s", ", ".join(t.name for t in targets))
    while not stop.is_set():
        try:
            report = dispatch_once(engine, targets, **options)
        except DBAPIError:
            if once:
                raise
            logger.exception("notification round failed; retrying in %gs", interval)
            stop.wait(interval)
            continue
        total += report
        if report.claimed:
            logger.info("notification round: %s", report)
        if once:
            break
        if report.claimed < batch:
            stop.wait(interval)
    return total
