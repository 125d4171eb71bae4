"""Inventory views: stock per bucket (the ledger sum) and returns in limbo."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from api.auth import needs
from api.deps import State
from api.routes.returns import ERRORS
from api.schemas import ID_PATTERN, LimboOut, StockCountIn, StockOut
from oms.lifecycle import count_stock, limbo, stock
from oms.uow import retrying

router = APIRouter(prefix="/v1/inventory", tags=["inventory"])
Ident = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN)]


@router.get("/limbo", response_model=list[LimboOut], responses=ERRORS, openapi_extra=needs("returns:read"))
def read_limbo(
    state: State,
    location_id: Annotated[str | None, Query(min_length=1, max_length=64, pattern=ID_PATTERN)] = None,
) -> list[LimboOut]:
    """Units received but not yet disposed, oldest first, with their age in days."""
    return retrying(
        state.engine,
        lambda session: [LimboOut(**item.__dict__) for item in limbo(session, location_id=location_id)],
        write=False,
    )


@router.get(
    "/{location_id}/{sku}", response_model=StockOut, responses=ERRORS, openapi_extra=needs("returns:read")
)
def read_stock(location_id: Ident, sku: Ident, state: State) -> StockOut:
    """Stock of one sku at one location, per bucket (sellable, returns_pending, refurbishment, reserved, disposed)."""
    return retrying(
        state.engine,
        lambda session: StockOut(location_id=location_id, sku=sku, buckets=stock(session, location_id, sku)),
        write=False,
    )


@router.put(
    "/{location_id}/{sku}", response_model=StockOut, responses=ERRORS, openapi_extra=needs("inventory:write")
)
def put_stock(location_id: Ident, sku: Ident, body: StockCountIn, state: State) -> StockOut:
    """A stock count: the location's sellable units of the sku are set to `sellable` (a `stock_count`
    movement of the difference in the ledger). Exchanges take their replacements from this stock. Safe
    to repeat: the same count twice moves nothing the second time."""
    return retrying(
        state.engine,
        lambda session: StockOut(
            location_id=location_id,
            sku=sku,
            buckets=count_stock(session, location_id, sku, body.sellable, at=state.clock()),
        ),
    )
