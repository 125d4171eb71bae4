"""Where a returned item goes: feasibility rules from its condition, then a pluggable chooser.

The default chooser is the static routing table most retailers run; the recovery model (models/) plugs
in through the same `DispositionChooser` protocol and picks the feasible outlet with the highest
expected net value.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from oms.errors import RecoupError

# What each condition allows. A damaged or used item cannot be restocked as new; an empty box has
# nothing to sell, only to recycle (and to investigate, which the inspection event flags).
FEASIBLE: dict[str, tuple[str, ...]] = {
    "new": ("restock", "open_box", "liquidate", "return_to_vendor", "donate", "recycle"),
    "open_box": ("open_box", "refurbish", "liquidate", "donate", "recycle"),
    "used": ("refurbish", "liquidate", "donate", "recycle"),
    "damaged": ("refurbish", "liquidate", "return_to_vendor", "recycle"),
    "defective": ("refurbish", "liquidate", "return_to_vendor", "recycle"),
    "wrong_item": ("liquidate", "recycle"),
    "empty_box": ("recycle",),
}

STATIC_ROUTING: dict[str, str] = {
    "new": "restock",
    "open_box": "open_box",
    "used": "liquidate",
    "damaged": "liquidate",
    "defective": "return_to_vendor",
    "wrong_item": "liquidate",
    "empty_box": "recycle",
}

# The inventory bucket a disposition moves units into (from returns_pending).
BUCKET: dict[str, str] = {
    "restock": "sellable",
    "open_box": "sellable",
    "refurbish": "refurbishment",
    "liquidate": "disposed",
    "return_to_vendor": "disposed",
    "donate": "disposed",
    "recycle": "disposed",
}

SUSPICIOUS_CONDITIONS = frozenset({"empty_box", "wrong_item"})


class InfeasibleDispositionError(RecoupError):
    """The disposition is not allowed for the item's condition."""


def feasible(condition: str) -> tuple[str, ...]:
    return FEASIBLE[condition]


def check_feasible(condition: str, disposition: str) -> None:
    if disposition not in FEASIBLE[condition]:
        raise InfeasibleDispositionError(
            f"a {condition.replace('_', ' ')} item cannot go to {disposition}; "
            f"allowed: {', '.join(FEASIBLE[condition])}"
        )


@dataclass(frozen=True)
class ReturnedItem:
    """What a chooser knows about one returned line at disposition time."""

    sku: str
    category: str | None
    brand: str | None
    condition: str
    reason: str
    quantity: int
    unit_price: Decimal
    unit_cost: Decimal | None
    location_id: str | None
    list_price: Decimal | None = None
    location_kind: str | None = None
    days_since_purchase: float | None = None
    receiptless: bool = False
    style_return_rate: float | None = None


@dataclass(frozen=True)
class Choice:
    disposition: str
    expected_value: Decimal | None  # per returned line; None when the chooser has no estimate
    chooser: str


class DispositionChooser(Protocol):
    name: str

    def choose(self, item: ReturnedItem) -> Choice: ...


class StaticChooser:
    """The static routing table: condition -> outlet."""

    name = "static"

    def choose(self, item: ReturnedItem) -> Choice:
        return Choice(STATIC_ROUTING[item.condition], None, self.name)
