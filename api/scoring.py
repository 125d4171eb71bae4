"""Scoring at return time: online features -> champion fraud model -> calibrated score, band, decision
and reasons; per line the recovery estimate, recommended disposition and refund estimate.

The champion is loaded once (native LightGBM boosters, numpy on the request path) and hot-swapped by a
background thread when the registry's `champion` alias moves: a request uses whichever model it picked
up when it started, and the swap is one reference assignment, so no request is dropped. With no fraud
champion the rules scorer serves (`models.rules`, `model_version: "rules"`, with `serving_because`) and
gives way to a model the moment one is promoted. With no scorer at all, or one that fails, the policy
decision stands and the answer says `degraded: true`; never a 5xx.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from features import engine as feature_engine
from features import online as online_features
from features.online import OnlineRequest, RequestLine
from models.explain import DOWN, UP, reason_codes
from models.fraud import FraudModel, band
from models.recovery import RecoveryModel
from models.rules import VERSION as RULES_VERSION
from oms.disposition import FEASIBLE, STATIC_ROUTING
from oms.driver import Driver, Statement
from oms.lifecycle import Assessment, CreateReturn, Reason, RequestContext
from oms.policy import Policy
from oms.tables import ServingLog

log = logging.getLogger("recoup.scoring")


@dataclass
class Champions:
    fraud: FraudModel | None = None
    recovery: RecoveryModel | None = None
    checked_at: float = 0.0
    error: str | None = None


class ModelHolder:
    """The champion models of this process; `current` is swapped atomically on refresh."""

    def __init__(
        self, loader: Callable[[], tuple[FraudModel | None, RecoveryModel | None]], interval: float = 30.0
    ) -> None:
        self.loader = loader
        self.interval = interval
        self.current = Champions()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> Champions:
        """Load the champions if the registry points elsewhere than what we hold (one at a time)."""
        with self._lock:
            try:
                fraud, recovery = self.loader()
                held = self.current
                changed = _identity(fraud) != _identity(held.fraud) or _identity(recovery) != _identity(
                    held.recovery
                )
                if changed:
                    log.info(
                        "champion models: fraud %s, recovery %s",
                        fraud.version if fraud else None,
                        recovery.version if recovery else None,
                    )
                    self.current = Champions(fraud, recovery, time.monotonic())
                else:
                    self.current.checked_at = time.monotonic()
                    self.current.error = None
            except Exception as exc:  # the registry is down: keep serving what we have
                log.warning("could not refresh the champion models: %s", exc)
                self.current.error = str(exc)
        return self.current

    def start(self) -> None:
        if self._thread is not None:
            return
        self.refresh()

        def loop() -> None:
            while not self._stop.wait(self.interval):
                self.refresh()

        self._thread = threading.Thread(target=loop, name="recoup-champion-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()


def _identity(model) -> tuple:
    """What tells two served models apart: the version, and for the rules scorer its weights too."""
    if model is None:
        return (None,)
    if model.version == RULES_VERSION:
        return (model.version, repr(sorted(model.meta().items())))
    return (model.version,)


def registry_loader(
    tracking_uri: str, artifact_root: str | None = None
) -> Callable[[], tuple[FraudModel | None, RecoveryModel | None]]:
    """Loads the champions from MLflow, re-reading the boosters only when the alias moved."""
    from models import registry

    cache: dict[str, Any] = {}

    def load() -> tuple[FraudModel | None, RecoveryModel | None]:
        registry.configure(tracking_uri, artifact_root)
        out = []
        for name, loader in (
            (registry.FRAUD_MODEL, registry.load_fraud),
            (registry.RECOVERY_MODEL, registry.load_recovery),
        ):
            version = registry.champion_version(name)
            if version is None:
                cache.pop(name, None)
                # no fraud champion: the rules scorer serves (labelled "rules"), never nothing
                out.append(registry.load_rules() if name == registry.FRAUD_MODEL else None)
                continue
            if name not in cache or cache[name].version != version:
                cache[name] = loader(version)
            out.append(cache[name])
        return out[0], out[1]

    return load


@dataclass
class LineEstimate:
    line_no: int
    sku: str | None
    condition_assumed: str
    recommended_disposition: str | None
    recovery_estimate: float | None
    refund_estimate: float | None


@dataclass
class Scored:
    assessment: Assessment
    features: dict[str, float] = field(default_factory=dict)
    lines: list[LineEstimate] = field(default_factory=list)
    latency_ms: float = 0.0


class ModelScorer:
    """The `oms.lifecycle.Scorer` backed by the champion models (plugs into `ReturnService`)."""

    def __init__(self, holder: ModelHolder, policy: Policy) -> None:
        self.holder = holder
        self.policy = policy
        self.scored: list[Scored] = []  # what each assessment of the last `assess_many` computed

    @property
    def last(self) -> Scored | None:
        """What the last assessment computed (per service instance)."""
        return self.scored[-1] if self.scored else None

    def reads(self, db: Driver, request: CreateReturn, now: dt.datetime) -> list[Statement]:
        """The online features' reads, batched with the return's context (one round trip)."""
        return online_features.reads(db, _online_request(request, now))

    def assess(
        self, session: Session, request: CreateReturn, context: RequestContext, policy_decision: Assessment
    ) -> Assessment:
        return self.assess_many(session, [(request, context, policy_decision)])[0]

    def assess_many(
        self, session: Session, items: Sequence[tuple[CreateReturn, RequestContext, Assessment]]
    ) -> list[Assessment]:
        """Score several requests at once: their features in one `engine.compute` over the batch's
        inputs, then one TreeSHAP call for all their rows and one recovery call for all their lines.
        `self.scored` holds what each assessment computed.

        Anything failing for the batch as a whole (a request whose rows cannot be assembled, say) is
        retried request by request, so that one bad request degrades only its own answer."""
        started = time.perf_counter()
        champions = self.holder.current  # one model for the whole batch, even if the alias moves now
        self.scored = self._scored(session, champions, items)
        latency_ms = (time.perf_counter() - started) * 1000
        for one in self.scored:
            one.latency_ms = latency_ms
        return [one.assessment for one in self.scored]

    def _scored(self, session: Session, champions: Champions, items) -> list[Scored]:
        try:
            if champions.fraud is None:
                raise LookupError("no champion fraud model")
            requests, history = self._inputs(session, items)
            values = feature_engine.compute(requests, history)
            return self._score_all(champions, items, requests, values)
        except Exception as exc:
            if len(items) > 1:
                return [one for item in items for one in self._scored(session, champions, [item])]
            return [self._degraded(session, champions, *items[0], exc)]

    def _inputs(self, session: Session, items):
        """The feature inputs of the items' requests, as one batch (`features.online.assemble_many`)."""
        db = Driver(session.connection())
        online = [_online_request(request, context.now) for request, context, *_ in items]
        rows = [
            # a context read without this scorer has no rows of its reads: read them now
            context.scorer_rows if context.scorer_rows is not None else db.run(online_features.reads(db, one))
            for one, (_, context, *_) in zip(online, items, strict=True)
        ]
        return online_features.assemble_many(db, online, rows)

    def _score_all(self, champions: Champions, items, requests, values) -> list[Scored]:
        """Every request's score, reasons and line estimates: the booster walks all the rows in one call
        (each row's contributions are the ones it gets alone; they sum to its margin, so one TreeSHAP
        pass gives both score and reasons)."""
        model = champions.fraud
        # the feature columns as rows, then turned: a fifth of column_stack's cost for 67 short columns
        matrix = np.ascontiguousarray(np.array([values[name] for name in model.features], dtype=np.float64).T)
        contributions = model.rows.predict_rows(matrix, "contrib")
        margins = np.array([row.sum() for row in contributions])  # each row summed as it is alone
        scores = model.calibrate(margins)
        lines = self._lines(requests, champions.recovery, [request for request, _, _ in items])
        out = []
        by_group = getattr(model, "typical_by_group", None)
        review_from = model.review_from(self.policy.fraud)  # the queue's cut: within the team's capacity
        for index, (_, _, policy_decision) in enumerate(items):
            row, score = matrix[index], float(scores[index])
            # one direction per return: what raises the risk of a flagged one, what lowers an approved one's
            flagged = (policy_decision.decision, self.policy.decision_for_score(score, review_from)) != (
                "approve",
                "approve",
            )
            reasons = reason_codes(
                model.features,
                row,
                contributions[index],
                model.typical,
                direction=UP if flagged else DOWN,
                by_group=by_group,
            )
            assessment = self._combine(
                policy_decision, score, reasons if flagged else [], model.version, review_from
            )
            if not flagged:
                assessment.extra["model_reasons_down"] = reasons
            if model.version == RULES_VERSION:
                assessment.extra["serving_because"] = getattr(model, "why", "")
            out.append(Scored(assessment, dict(zip(model.features, row.tolist(), strict=True)), lines[index]))
        return out

    def _degraded(
        self,
        session: Session,
        champions: Champions,
        request: CreateReturn,
        context: RequestContext,
        policy_decision: Assessment,
        exc: Exception,
    ) -> Scored:
        """The policy decision flagged degraded, with the line estimates if they can still be made."""
        log.warning("scoring degraded to the policy decision: %s", exc)
        scored = Scored(
            Assessment(
                policy_decision.decision,
                policy_decision.reasons,
                None,
                None,
                True,
                {"degraded_because": str(exc)[:200]},
            )
        )
        try:
            batch, _ = self._inputs(session, [(request, context)])
            scored.lines = self._lines(batch, champions.recovery, [request])[0]
        except Exception:  # estimates are a courtesy; the decision stands without them
            scored.lines = []
        return scored

    def _combine(
        self,
        policy_decision: Assessment,
        score: float,
        reasons: list[dict],
        version: str | None,
        review_from: float | None = None,
    ) -> Assessment:
        """Hard policy violations first; then the score (held for review from `review_from`, the cut that
        keeps the queue within the team's capacity); soft policy reasons (review) still hold."""
        fraud = self.policy.fraud
        decision = policy_decision.decision
        extra: dict[str, Any] = {
            "band": band(score, fraud.review_threshold, fraud.deny_threshold),
            "model_reasons": reasons,
        }
        all_reasons = list(policy_decision.reasons)
        if decision != "deny":
            by_score = self.policy.decision_for_score(score, review_from)
            if by_score != "approve":
                top = "; ".join(r["text"] for r in reasons[:2]) or "high fraud score"
                all_reasons.append(Reason("fraud_score", f"fraud score {score:.2f}: {top}", by_score))
            order = {"approve": 0, "review": 1, "deny": 2}
            decision = max(decision, by_score, key=order.__getitem__)
        return Assessment(decision, tuple(all_reasons), score, version, False, extra)

    def _lines(
        self, requests, recovery: RecoveryModel | None, creates: Sequence[CreateReturn]
    ) -> list[list[LineEstimate]]:
        """Per request, per line: refund estimate and the recommended disposition with its recovery
        estimate. `requests` holds the requests' lines one after another (as
        `features.online.assemble_many` puts them); every feasible disposition of every line is
        estimated in one booster call."""
        lines, header = requests.lines, requests.header
        category, unit_paid = lines["category"], lines["unit_paid"]
        rows: list[np.ndarray] = []  # a recovery row per (line, feasible disposition)
        routed: list[tuple[LineEstimate, tuple[str, ...], int]] = []  # (estimate, its options, quantity)
        out: list[list[LineEstimate]] = []
        position = 0  # the line's place among every request's lines
        for index, request in enumerate(creates):
            mine = []
            for number, line in enumerate(request.lines, start=1):
                condition = line.condition or "new"
                paid = float(unit_paid[position])
                known = not math.isnan(paid)
                refund = None
                if known:
                    rate = (
                        float(
                            self.policy.restocking_fee_rate(category[position], line.condition, line.reason)
                        )
                        if line.condition
                        else 0.0
                    )
                    refund = round(paid * line.quantity * (1 - rate), 2)
                estimate = LineEstimate(number, lines["sku"][position], condition, None, None, refund)
                if recovery is None or not known:
                    estimate.recommended_disposition = STATIC_ROUTING.get(condition)
                elif feasible := FEASIBLE.get(condition, ()):
                    rows += _recovery_rows(
                        recovery, lines, position, condition, line, header, index, feasible
                    )
                    routed.append((estimate, feasible, line.quantity))
                mine.append(estimate)
                position += 1
            out.append(mine)
        if routed:
            assert recovery is not None
            values = recovery.rows.predict_rows(np.stack(rows))[:, 0]
            taken = 0
            for estimate, feasible, quantity in routed:
                estimates = [float(value) * quantity for value in values[taken : taken + len(feasible)]]
                taken += len(feasible)
                best = int(np.argmax(estimates))
                estimate.recommended_disposition = feasible[best]
                estimate.recovery_estimate = round(estimates[best], 2)
        return out


def _recovery_rows(
    model: RecoveryModel, lines, position: int, condition: str, line, header, index: int, feasible
) -> list[np.ndarray]:
    """The recovery model's rows for one line, one per feasible disposition (in that order)."""
    placed = header["order_placed"][index]
    days = (header["t"][index] - placed) / 86_400_000_000 if not math.isnan(placed) else math.nan
    base = {
        "category": lines["category"][position],
        "brand": None,
        "condition": condition,
        "reason": line.reason,
        "location_kind": None,
        "quantity": float(line.quantity),
        "unit_price": float(lines["unit_paid"][position]),
        "list_price": math.nan,
        "unit_cost": math.nan,
        "days_since_purchase": days,
        "receiptless": float(isinstance(header["order_id"][index], type(None))),
        "style_return_rate": math.nan,
    }
    codes = model.codes
    row = np.array([_encode(codes, name, base.get(name)) for name in model.features], dtype=np.float64)
    where = model.features.index("disposition")
    out = []
    for option in feasible:
        one = row.copy()
        one[where] = _encode(codes, "disposition", option)
        out.append(one)
    return out


def _encode(codes: dict[str, dict[Any, int]], name: str, value: Any) -> float:
    if name in codes:
        return float(codes[name].get(value, -1))
    return math.nan if value is None else float(value)


def _online_request(request: CreateReturn, now: dt.datetime) -> OnlineRequest:
    return OnlineRequest(
        t=now,
        channel=request.channel,
        lines=tuple(
            RequestLine(
                quantity=line.quantity, reason=line.reason, order_line_no=line.order_line_no, sku=line.sku
            )
            for line in request.lines
        ),
        order_id=request.order_id,
        customer_id=request.customer_id,
        location_id=request.location_id,
        employee_id=request.employee_id,
        refund_method=request.refund_method,
    )


def log_serving(engine_or_session, scored: Scored, *, return_id: str | None, request_t: dt.datetime) -> None:
    """Record what was served (features, model version, score, latency) for skew monitoring."""
    row = ServingLog(
        served_at=dt.datetime.now(dt.UTC),
        requested_at=request_t,
        return_id=return_id,
        model_version=scored.assessment.model_version,
        score=scored.assessment.score,
        decision=scored.assessment.decision,
        degraded=scored.assessment.degraded,
        latency_ms=scored.latency_ms,
        features={k: (None if v != v else v) for k, v in scored.features.items()},
    )
    if isinstance(engine_or_session, Session):
        engine_or_session.add(row)
        return
    assert isinstance(engine_or_session, Engine)
    with Session(engine_or_session) as session, session.begin():
        session.add(row)


__all__ = [
    "Champions",
    "Decimal",
    "LineEstimate",
    "ModelHolder",
    "ModelScorer",
    "Scored",
    "log_serving",
    "registry_loader",
]
