"""Return lifecycle endpoints: create, read, search, receive, inspect, dispose, refund, cancel, expire,
and the analyst's decision."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Annotated

import psycopg
from fastapi import APIRouter, Path, Query, Request
from sqlalchemy import or_, select
from sqlalchemy.exc import DBAPIError, PendingRollbackError
from sqlalchemy.orm import Session
from starlette.responses import JSONResponse

from api.auth import needs
from api.batching import Batcher
from api.commands import actor, run_command
from api.deps import Caller, IdempotencyKey, State
from api.schemas import (
    ID_PATTERN,
    CancelIn,
    DecisionIn,
    DisposeIn,
    EmptyIn,
    ErrorOut,
    InspectIn,
    LineEstimateOut,
    ModelReason,
    PaymentIn,
    ReceiveIn,
    ReturnCreate,
    ReturnOut,
    ReturnSummary,
    ReviewOut,
    ScoreOut,
    ScoreReason,
    Status,
)
from api.views import return_view, summary
from oms.lifecycle import CreateReturn, LineRequest, ReturnService, UnknownReferenceError
from oms.tables import Return
from oms.uow import retrying

log = logging.getLogger("recoup.api.scoring")

router = APIRouter(prefix="/v1/returns", tags=["returns"])

ERRORS = {
    401: {"model": ErrorOut, "description": "No valid API key"},
    403: {"model": ErrorOut, "description": "The key lacks the scope"},
    404: {"model": ErrorOut, "description": "No such return"},
    409: {"model": ErrorOut, "description": "Not allowed in the return's state, or a concurrent change won"},
    422: {"model": ErrorOut, "description": "Invalid request (or Idempotency-Key reused with another body)"},
}
ReturnId = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN, description="The return id.")]
QueryId = Annotated[str | None, Query(min_length=1, max_length=64, pattern=ID_PATTERN)]


def _service(session: Session, state, scorer=None) -> ReturnService:
    return ReturnService(session, state.policy, chooser=state.chooser, now=state.clock, scorer=scorer)


def _log(state, scored, return_id: str | None, requested_at) -> None:
    if scored is None or state.serving_log is None:
        return
    state.serving_log.put(
        {
            "served_at": state.clock(),
            "requested_at": requested_at,
            "return_id": return_id,
            "model_version": scored.assessment.model_version,
            "score": scored.assessment.score,
            "decision": scored.assessment.decision,
            "degraded": scored.assessment.degraded,
            "latency_ms": scored.latency_ms,
            "features": {k: (None if v != v else v) for k, v in scored.features.items()},
        }
    )


def _command(request: Request, state, caller, key, body, action):
    def command(session: Session):
        return action(_service(session, state), session)

    return run_command(state, caller, key, request.url.path, body, command)


@router.post(
    "", status_code=201, response_model=ReturnOut, responses=ERRORS, openapi_extra=needs("returns:write")
)
def create_return(
    body: ReturnCreate, request: Request, state: State, caller: Caller, key: IdempotencyKey = None
) -> JSONResponse:
    """Create a return: decided by the policy (and the fraud score), authorised with an RMA number, held for review or rejected."""
    create = _create_request(body)
    scorer = state.scorer()

    def action(service: ReturnService, session: Session):
        header = ReturnService(
            session, state.policy, chooser=state.chooser, now=state.clock, scorer=scorer
        ).create(create, actor(caller))
        _log(state, scorer.last, header.return_id, header.requested_at)
        return 201, return_view(session, header.return_id)

    return _command(request, state, caller, key, body, action)


def _create_request(body: ReturnCreate) -> CreateReturn:
    return CreateReturn(
        channel=body.channel,
        lines=tuple(
            LineRequest(
                quantity=line.quantity,
                reason=line.reason,
                order_line_no=line.order_line_no,
                sku=line.sku,
                condition=line.condition,
                replacement_sku=line.replacement_sku,
            )
            for line in body.lines
        ),
        order_id=body.order_id,
        customer_id=body.customer_id,
        location_id=body.location_id,
        employee_id=body.employee_id,
        refund_method=body.refund_method,
        return_id=body.return_id,
        receive_now=body.receive_now,
        refund_now=body.refund_now and body.receive_now,
    )


@router.post("/score", response_model=ScoreOut, responses=ERRORS, openapi_extra=needs("returns:read"))
async def score_return(
    body: ReturnCreate,
    state: State,
    explain_approved: Annotated[
        bool, Query(description="For an approved return, the reasons that lower its risk.")
    ] = False,
) -> ScoreOut:
    """Score a prospective return without changing anything: decision, fraud score, reasons, per-line
    estimates. `model_reasons` are what raises the risk of a return sent to review or refused; an approved
    return has none unless `explain_approved` asks for what lowers its risk."""
    batcher = state.batchers.get("score")
    if batcher is None:
        batcher = state.batchers["score"] = Batcher(
            lambda bodies: _score_many(state, bodies), state.score_max_batch, state.score_batch_wait
        )
    out = await batcher.submit(body)
    if out.decision == "approve":
        out = out.model_copy(update={"model_reasons": out.approved_reasons if explain_approved else []})
    return out


def _score_many(state, bodies: Sequence[ReturnCreate]) -> list[ScoreOut | Exception]:
    """Scores of the requests that arrived together (`api.batching`): one read-only transaction and one
    round trip for all of them, one feature computation; an invalid request gets its own error.

    Nothing a score does is kept, so it may read a replica (`RECOUP_SCORING_DATABASE_URL`). A replica
    lags: what it does not know yet (an order placed a moment ago) is read again from the state
    database, and so is the whole batch if the replica fails (down, or a query cancelled by replay);
    then the replica rests for `state.read_engine_rest` seconds (30), so that a replica that is down
    does not cost every batch a failed connection. A connection lost on the way is read again on a new
    one first (`oms.uow.retrying`); with the state database out of reach too, each request still gets
    an answer: unscored, for review. Never a 5xx."""
    try:
        return _scores_with_fallback(state, bodies)
    except (DBAPIError, psycopg.Error, PendingRollbackError) as exc:
        # the state database is out of reach (after `retrying`'s attempts): an answer all the same
        log.warning("scoring without the database (%s)", str(getattr(exc, "orig", None) or exc)[:200])
        return [_unscored() for _ in bodies]


def _unscored() -> ScoreOut:
    """The answer when nothing can be read: no score, and a person decides (review)."""
    return ScoreOut(
        decision="review",
        score=None,
        band=None,
        degraded=True,
        model_version=None,
        reasons=[
            ScoreReason(
                code="database_unavailable",
                message="the return's history could not be read; check it by hand",
                severity="review",
            )
        ],
        model_reasons=[],
        lines=[],
        latency_ms=0.0,
    )


def _scores_with_fallback(state, bodies: Sequence[ReturnCreate]) -> list[ScoreOut | Exception]:
    primary = state.score_engine or state.engine
    resting = time.monotonic() - state.read_engine_failed_at < state.read_engine_rest
    if state.read_engine is None or resting:
        return _scores(state, bodies, primary)
    try:
        out = _scores(state, bodies, state.read_engine)
    # through SQLAlchemy, from the driver's own pipeline, or a transaction the failure left to roll back
    except (DBAPIError, psycopg.Error, PendingRollbackError) as exc:
        state.read_engine_failed_at = time.monotonic()
        log.warning(
            "the scoring database failed (%s); scoring on the state database for %.0f s",
            str(getattr(exc, "orig", None) or exc)[:200],
            state.read_engine_rest,
        )
        return _scores(state, bodies, primary)
    unknown = [i for i, result in enumerate(out) if isinstance(result, UnknownReferenceError)]
    if unknown:
        for i, result in zip(unknown, _scores(state, [bodies[i] for i in unknown], primary), strict=True):
            out[i] = result
    return out


def _scores(state, bodies: Sequence[ReturnCreate], engine) -> list[ScoreOut | Exception]:
    creates = [_create_request(body) for body in bodies]

    def read(session: Session):
        scorer = state.scorer()  # afresh on each attempt: it keeps what it scored
        service = _service(session, state, scorer)
        contexts = service.contexts(creates, last_read=True)
        valid = [
            (create, context)
            for create, context in zip(creates, contexts, strict=True)
            if not isinstance(context, Exception)
        ]
        return scorer, contexts, valid, service.assess_many(valid) if valid else []

    scorer, contexts, valid, assessed = retrying(engine, read, write=False)
    assessments = iter(assessed)
    scored = iter(scorer.scored if valid else [])
    out: list[ScoreOut | Exception] = []
    for context in contexts:
        if isinstance(context, Exception):
            out.append(context)
            continue
        assessment, one = next(assessments), next(scored)
        _log(state, one, None, context.now)
        extra = assessment.extra or {}
        model_reasons, down = extra.get("model_reasons", []), extra.get("model_reasons_down", [])
        out.append(
            ScoreOut(
                decision=assessment.decision,
                score=assessment.score,
                band=assessment.extra.get("band") if assessment.extra else None,
                degraded=assessment.degraded,
                model_version=assessment.model_version,
                reasons=[ScoreReason(**r.as_dict()) for r in assessment.reasons],
                model_reasons=[ModelReason(**r) for r in model_reasons],
                approved_reasons=[ModelReason(**r) for r in down],
                serving_because=extra.get("serving_because"),
                lines=[LineEstimateOut(**line.__dict__) for line in one.lines],
                latency_ms=one.latency_ms,
            )
        )
    return out


@router.get("/{return_id}", response_model=ReturnOut, responses=ERRORS, openapi_extra=needs("returns:read"))
def read_return(return_id: ReturnId, state: State) -> ReturnOut:
    """One return with its lines, refunds (per tender), exchanges and timeline."""
    return retrying(state.engine, lambda session: return_view(session, return_id), write=False)


@router.get("", response_model=list[ReturnSummary], responses=ERRORS, openapi_extra=needs("returns:read"))
def search_returns(
    state: State,
    order_id: QueryId = None,
    customer_id: QueryId = None,
    rma_number: QueryId = None,
    status: Status | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[ReturnSummary]:
    """Find returns by order, customer or RMA number, across every channel (buy online, return in store included)."""
    query = select(Return).order_by(Return.requested_at.desc()).limit(limit)
    if order_id is not None:
        query = query.where(Return.order_id == order_id)
    if customer_id is not None:
        query = query.where(Return.customer_id == customer_id)
    if rma_number is not None:
        query = query.where(or_(Return.rma_number == rma_number, Return.return_id == rma_number))
    if status is not None:
        query = query.where(Return.status == status)
    return retrying(
        state.engine, lambda session: [summary(r) for r in session.execute(query).scalars()], write=False
    )


@router.post(
    "/{return_id}/receive", response_model=ReturnOut, responses=ERRORS, openapi_extra=needs("returns:write")
)
def receive_return(
    return_id: ReturnId,
    body: ReceiveIn,
    request: Request,
    state: State,
    caller: Caller,
    key: IdempotencyKey = None,
) -> JSONResponse:
    """Record the parcel or counter receipt: units go to the location's returns-pending stock (limbo)."""

    def action(service: ReturnService, session: Session):
        quantities = {line.line_no: line.quantity for line in body.lines} if body.lines else None
        service.receive(return_id, actor(caller), quantities=quantities, location_id=body.location_id)
        return 200, return_view(session, return_id)

    return _command(request, state, caller, key, body, action)


@router.post(
    "/{return_id}/inspect", response_model=ReturnOut, responses=ERRORS, openapi_extra=needs("returns:write")
)
def inspect_return(
    return_id: ReturnId,
    body: InspectIn,
    request: Request,
    state: State,
    caller: Caller,
    key: IdempotencyKey = None,
) -> JSONResponse:
    """Record each received line's condition (empty boxes and wrong items are flagged in the timeline)."""

    def action(service: ReturnService, session: Session):
        service.inspect(return_id, {line.line_no: line.condition for line in body.lines}, actor(caller))
        return 200, return_view(session, return_id)

    return _command(request, state, caller, key, body, action)


@router.post(
    "/{return_id}/dispose", response_model=ReturnOut, responses=ERRORS, openapi_extra=needs("returns:write")
)
def dispose_return(
    return_id: ReturnId,
    body: DisposeIn,
    request: Request,
    state: State,
    caller: Caller,
    key: IdempotencyKey = None,
) -> JSONResponse:
    """Route inspected lines (given, or chosen by the best feasible expected value) and move their stock."""

    def action(service: ReturnService, session: Session):
        wanted = {line.line_no: line.disposition for line in body.lines} if body.lines else None
        service.dispose(return_id, actor(caller), wanted)
        return 200, return_view(session, return_id)

    return _command(request, state, caller, key, body, action)


@router.post(
    "/{return_id}/payment", response_model=ReturnOut, responses=ERRORS, openapi_extra=needs("returns:write")
)
def pay_return(
    return_id: ReturnId,
    body: PaymentIn,
    request: Request,
    state: State,
    caller: Caller,
    key: IdempotencyKey = None,
) -> JSONResponse:
    """Record what the till collected for exchanges dearer than what was returned (the return's
    `amount_due`, exactly): the return leaves awaiting_payment and goes on."""

    def action(service: ReturnService, session: Session):
        service.record_payment(
            return_id, actor(caller), amount=body.amount, method=body.method, reference=body.reference
        )
        return 200, return_view(session, return_id)

    return _command(request, state, caller, key, body, action)


@router.post(
    "/{return_id}/refund", response_model=ReturnOut, responses=ERRORS, openapi_extra=needs("returns:write")
)
def refund_return(
    return_id: ReturnId,
    body: EmptyIn,
    request: Request,
    state: State,
    caller: Caller,
    key: IdempotencyKey = None,
) -> JSONResponse:
    """Refund the received units: price paid, shipping if at fault, less fees, back to the original tenders."""

    def action(service: ReturnService, session: Session):
        service.refund(return_id, actor(caller))
        return 200, return_view(session, return_id)

    return _command(request, state, caller, key, body, action)


@router.post(
    "/{return_id}/cancel", response_model=ReturnOut, responses=ERRORS, openapi_extra=needs("returns:write")
)
def cancel_return(
    return_id: ReturnId,
    body: CancelIn,
    request: Request,
    state: State,
    caller: Caller,
    key: IdempotencyKey = None,
) -> JSONResponse:
    """Cancel an authorised return that will not be sent."""

    def action(service: ReturnService, session: Session):
        service.cancel(return_id, actor(caller), body.reason)
        return 200, return_view(session, return_id)

    return _command(request, state, caller, key, body, action)


@router.post(
    "/{return_id}/expire", response_model=ReturnOut, responses=ERRORS, openapi_extra=needs("returns:write")
)
def expire_return(
    return_id: ReturnId,
    body: EmptyIn,
    request: Request,
    state: State,
    caller: Caller,
    key: IdempotencyKey = None,
) -> JSONResponse:
    """Expire an authorised return that never arrived."""

    def action(service: ReturnService, session: Session):
        service.expire(return_id, actor(caller))
        return 200, return_view(session, return_id)

    return _command(request, state, caller, key, body, action)


@router.post(
    "/{return_id}/decision", response_model=ReviewOut, responses=ERRORS, openapi_extra=needs("review")
)
def decide_return(
    return_id: ReturnId,
    body: DecisionIn,
    request: Request,
    state: State,
    caller: Caller,
    key: IdempotencyKey = None,
) -> JSONResponse:
    """A loss-prevention decision (fraud, abuse, legitimate): authorises or rejects a held return and becomes a label."""

    def action(service: ReturnService, session: Session):
        review = service.decide(
            return_id,
            actor(caller),
            body.outcome,
            action=body.action,
            fraud_type=body.fraud_type,
            note=body.note,
        )
        header = service.get(return_id)
        return 200, ReviewOut(
            return_id=return_id,
            outcome=review.outcome,
            reviewer=review.reviewer,
            reviewed_at=review.reviewed_at,
            status=header.status,
        )

    return _command(request, state, caller, key, body, action)
