"""Return lifecycle endpoints: create, read, search, receive, inspect, dispose, refund, cancel, expire,
and the analyst's decision."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel
from sqlalchemy import or_, select
from sqlalchemy.orm import Session
from starlette.responses import JSONResponse

from api import score_requests
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
    PaymentIn,
    ReceiveIn,
    ReturnCreate,
    ReturnOut,
    ReturnSummary,
    ReviewOut,
    ScoreOut,
    Status,
)
from api.views import return_view, summary
from oms.lifecycle import ReturnService
from oms.tables import Return
from oms.uow import retrying

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


def _command(request: Request, state, caller, key, body, action):
    def command(session: Session):
        return action(score_requests.service(session, state), session)

    return run_command(state, caller, key, request.url.path, body, command)


@router.post(
    "", status_code=201, response_model=ReturnOut, responses=ERRORS, openapi_extra=needs("returns:write")
)
def create_return(
    body: ReturnCreate, request: Request, state: State, caller: Caller, key: IdempotencyKey = None
) -> JSONResponse:
    """Create a return: decided by the policy (and the fraud score), authorised with an RMA number, held for review or rejected."""
    create = score_requests.create_request(body)
    scorer = state.scorer()

    def action(service: ReturnService, session: Session):
        header = ReturnService(
            session, state.policy, chooser=state.chooser, now=state.clock, scorer=scorer
        ).create(create, actor(caller))
        score_requests.log_served(state, scorer.last, header.return_id, header.requested_at)
        return 201, return_view(session, header.return_id)

    return _command(request, state, caller, key, body, action)


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
            lambda bodies: score_requests.score_many(state, bodies),
            state.score_max_batch,
            state.score_batch_wait,
        )
    out = await batcher.submit(body)
    if out.decision == "approve":
        out = out.model_copy(update={"model_reasons": out.approved_reasons if explain_approved else []})
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


# --- the commands on one return: each a row of COMMANDS, declared as an endpoint by `_declare` ---------


@dataclass(frozen=True)
class Command:
    name: str  # POST /v1/returns/{return_id}/<name>
    body: type[BaseModel]
    scope: str
    summary: str  # the endpoint's documentation
    run: Callable[[ReturnService, str, Any, str], Any]  # (service, return_id, body, actor) -> result
    response_model: type[BaseModel] = ReturnOut
    verb: str = ""  # the endpoint function's name is <verb>_return (default: the command's name)

    @property
    def function(self) -> str:
        return f"{self.verb or self.name}_return"


def _receive(service: ReturnService, return_id: str, body: ReceiveIn, who: str) -> None:
    quantities = {line.line_no: line.quantity for line in body.lines} if body.lines else None
    service.receive(return_id, who, quantities=quantities, location_id=body.location_id)


def _dispose(service: ReturnService, return_id: str, body: DisposeIn, who: str) -> None:
    service.dispose(
        return_id, who, {line.line_no: line.disposition for line in body.lines} if body.lines else None
    )


def _decide(service: ReturnService, return_id: str, body: DecisionIn, who: str) -> ReviewOut:
    review = service.decide(
        return_id, who, body.outcome, action=body.action, fraud_type=body.fraud_type, note=body.note
    )
    return ReviewOut(
        return_id=return_id,
        outcome=review.outcome,
        reviewer=review.reviewer,
        reviewed_at=review.reviewed_at,
        status=service.get(return_id).status,
    )


COMMANDS = (
    Command(
        "receive",
        ReceiveIn,
        "returns:write",
        "Record the parcel or counter receipt: units go to the location's returns-pending stock (limbo).",
        _receive,
    ),
    Command(
        "inspect",
        InspectIn,
        "returns:write",
        "Record each received line's condition (empty boxes and wrong items are flagged in the timeline).",
        lambda service, return_id, body, who: service.inspect(
            return_id, {line.line_no: line.condition for line in body.lines}, who
        ),
    ),
    Command(
        "dispose",
        DisposeIn,
        "returns:write",
        "Route inspected lines (given, or chosen by the best feasible expected value) and move their stock.",
        _dispose,
    ),
    Command(
        "payment",
        PaymentIn,
        "returns:write",
        "Record what the till collected for exchanges dearer than what was returned (the return's "
        "`amount_due`, exactly): the return leaves awaiting_payment and goes on.",
        lambda service, return_id, body, who: service.record_payment(
            return_id, who, amount=body.amount, method=body.method, reference=body.reference
        ),
        verb="pay",
    ),
    Command(
        "refund",
        EmptyIn,
        "returns:write",
        "Refund the received units: price paid, shipping if at fault, less fees, back to the original "
        "tenders. Refused (409 refund_held) while an analyst's fraud or abuse decision stands.",
        lambda service, return_id, body, who: service.refund(return_id, who),
    ),
    Command(
        "cancel",
        CancelIn,
        "returns:write",
        "Cancel an authorised return that will not be sent.",
        lambda service, return_id, body, who: service.cancel(return_id, who, body.reason),
    ),
    Command(
        "expire",
        EmptyIn,
        "returns:write",
        "Expire an authorised return that never arrived.",
        lambda service, return_id, body, who: service.expire(return_id, who),
    ),
    Command(
        "decision",
        DecisionIn,
        "review",
        "A loss-prevention decision (fraud, abuse, legitimate): authorises or rejects a held return, holds "
        "the refund of one not yet refunded, and becomes a label.",
        _decide,
        ReviewOut,
        verb="decide",
    ),
)


def _declare(command: Command) -> None:
    """`POST /v1/returns/{return_id}/<name>`: the command in one transaction (Idempotency-Key replay
    included, `api.commands.run_command`), answering the return as it now is (or the command's own view)."""

    def endpoint(
        return_id: ReturnId,
        body: BaseModel,
        request: Request,
        state: State,
        caller: Caller,
        key: IdempotencyKey = None,
    ) -> JSONResponse:
        def action(service: ReturnService, session: Session):
            result = command.run(service, return_id, body, actor(caller))
            return 200, result if isinstance(result, BaseModel) else return_view(session, return_id)

        return _command(request, state, caller, key, body, action)

    endpoint.__annotations__["body"] = command.body  # the body's schema, for validation and OpenAPI
    endpoint.__name__ = endpoint.__qualname__ = command.function  # its OpenAPI operation id
    endpoint.__doc__ = command.summary
    router.post(
        f"/{{return_id}}/{command.name}",
        response_model=command.response_model,
        responses=ERRORS,
        openapi_extra=needs(command.scope),
    )(endpoint)


for _command_row in COMMANDS:
    _declare(_command_row)
