"""The return lifecycle: authorisation, receipt, inspection, disposition, refund, exchange, review.

Header states (DESIGN.md section 4):

    requested -> authorized | pending_review | rejected
    pending_review -> authorized | rejected            (an analyst decides)
    authorized -> received | cancelled | expired
    received -> inspected -> completed                 (completed once every line is disposed and refunded)

Lines carry their own state: received quantity, condition (inspection), disposition. Every command is one
transaction: the header change, an append-only event (actor, time, from, to, payload), and its side
effects (inventory movements, refunds and their per-tender allocations, loyalty clawback, exchanges,
outbox notifications). Concurrent commands on the returns of one order are serialised by the order's
row lock on PostgreSQL (`SELECT ... FOR NO KEY UPDATE`; SQLite has one writer at a time), so what
remains returnable and refundable is never computed from a stale snapshot; on one return, also by an
optimistic version check on the header: of two conflicting changes exactly one wins, the other gets
`ConflictError` or `IllegalTransitionError`.

One module per stage, each owning its commands, transitions and side effects: `request` (asked for,
assessed, authorised or held, decided, cancelled, expired), `reception`, `inspection` (and disposition),
`reimbursement` and `exchange`; `core` holds what they share. `ReturnService` only composes them.
"""

from __future__ import annotations

from oms.lifecycle.core import (
    CENT,
    CLOSED,
    SMOOTHING_UNITS,
    TRANSITIONS,
    ZERO,
    Assessment,
    ConflictError,
    CreateReturn,
    IllegalTransitionError,
    InsufficientStockError,
    InvalidRequestError,
    LifecycleError,
    LimboItem,
    LineRequest,
    NotFoundError,
    Reason,
    RefundHeldError,
    RequestContext,
    Scorer,
    Stage,
    UnknownReferenceError,
    amount_due,
    analyst_review,
    count_stock,
    limbo,
    stock,
    timeline,
    utcnow,
)
from oms.lifecycle.exchange import ExchangeStage
from oms.lifecycle.inspection import InspectionStage
from oms.lifecycle.reception import ReceptionStage
from oms.lifecycle.reimbursement import ReimbursementStage
from oms.lifecycle.request import RequestStage


class ReturnService(RequestStage, ReceptionStage, InspectionStage, ReimbursementStage, ExchangeStage):
    """Commands on returns, each inside the caller's transaction (`session.begin()`): the stages composed."""


__all__ = [
    "CENT",
    "CLOSED",
    "SMOOTHING_UNITS",
    "TRANSITIONS",
    "ZERO",
    "Assessment",
    "ConflictError",
    "CreateReturn",
    "ExchangeStage",
    "IllegalTransitionError",
    "InspectionStage",
    "InsufficientStockError",
    "InvalidRequestError",
    "LifecycleError",
    "LimboItem",
    "LineRequest",
    "NotFoundError",
    "Reason",
    "ReceptionStage",
    "RefundHeldError",
    "ReimbursementStage",
    "RequestContext",
    "RequestStage",
    "ReturnService",
    "Scorer",
    "Stage",
    "UnknownReferenceError",
    "amount_due",
    "analyst_review",
    "count_stock",
    "limbo",
    "stock",
    "timeline",
    "utcnow",
]
