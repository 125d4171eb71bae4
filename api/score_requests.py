"""Scoring requests for the API, behind `POST /v1/returns/score` and return creation: the requests that
arrived together scored in one read-only transaction (`api.batching`), on the scoring replica first and
on the state database when the replica lags or fails, and an answer (unscored, for review) when nothing
can be read. Every score served goes to the serving log."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import psycopg
from sqlalchemy.exc import DBAPIError, PendingRollbackError
from sqlalchemy.orm import Session

from api.schemas import LineEstimateOut, ModelReason, ReturnCreate, ScoreOut, ScoreReason
from oms.lifecycle import CreateReturn, LineRequest, ReturnService, UnknownReferenceError
from oms.uow import retrying

log = logging.getLogger("recoup.api.scoring")


def service(session: Session, state, scorer=None) -> ReturnService:
    """The lifecycle's service on `session` with the app's policy, disposition chooser and clock."""
    return ReturnService(session, state.policy, chooser=state.chooser, now=state.clock, scorer=scorer)


def create_request(body: ReturnCreate) -> CreateReturn:
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


def log_served(state, scored, return_id: str | None, requested_at) -> None:
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


def score_many(state, bodies: Sequence[ReturnCreate]) -> list[ScoreOut | Exception]:
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
    creates = [create_request(body) for body in bodies]

    def read(session: Session):
        scorer = state.scorer()  # afresh on each attempt: it keeps what it scored
        lifecycle = service(session, state, scorer)
        contexts = lifecycle.contexts(creates, last_read=True)
        valid = [
            (create, context)
            for create, context in zip(creates, contexts, strict=True)
            if not isinstance(context, Exception)
        ]
        return scorer, contexts, valid, lifecycle.assess_many(valid) if valid else []

    scorer, contexts, valid, assessed = retrying(engine, read, write=False)
    assessments = iter(assessed)
    scored = iter(scorer.scored if valid else [])
    out: list[ScoreOut | Exception] = []
    for context in contexts:
        if isinstance(context, Exception):
            out.append(context)
            continue
        assessment, one = next(assessments), next(scored)
        log_served(state, one, None, context.now)
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
