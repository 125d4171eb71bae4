"""The refund calculator: what a return gives back, to which tenders, and what it takes back.

Pure and deterministic: no database, no clock. Money comes in and goes out as `Decimal` with at most
2 places; all arithmetic is on integer cents, so cents are conserved by construction.

Proration rule (merchandise and shipping alike): an amount `T` spread over the `n` units of a line is
`paid(m) = floor(T * m / n)` for the first `m` units, and `k` more units after `j` already returned get
`paid(j + k) - paid(j)`. Every step is >= 0 and returning all `n` units, in any sequence of partial returns,
gives back exactly `T`. Shipping is first spread over the lines by merchandise value paid (the same
cumulative floor), then over each line's units; a unit's share is refunded with it only when the reason
puts the retailer at fault, otherwise it is forfeited.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from types import MappingProxyType
from typing import TypeVar

from oms import enums
from oms.errors import RecoupError
from oms.policy import Policy

ZERO = Decimal("0.00")
K = TypeVar("K")
V = TypeVar("V")


class RefundError(RecoupError):
    """A refund cannot be calculated as asked."""


class InvalidRefundInputError(RefundError):
    """The order snapshot, the returned items or the previous refunds are malformed or inconsistent."""


class UnknownOrderLineError(RefundError):
    """A returned item names an order line the order does not have."""


class ExcessReturnQuantityError(RefundError):
    """More units are returned than remain on the order line."""


class NotReturnableError(RefundError):
    """The policy makes the item's category non-returnable (e.g. gift cards)."""


class ReceiptlessRefusedError(RefundError):
    """A receiptless return the policy does not allow."""


class ReceiptlessChannelError(ReceiptlessRefusedError):
    """Receiptless returns are not accepted on this channel (the default policy: in store only)."""


class ReceiptlessLimitError(ReceiptlessRefusedError):
    """The customer already made the policy's maximum number of receiptless returns in its window."""


class ReceiptlessValueExceededError(ReceiptlessRefusedError):
    """The receiptless store credit would exceed the policy's maximum value per return."""


# --- money <-> cents ---------------------------------------------------------------------------------


def to_cents(amount: Decimal | int, what: str) -> int:
    """Exact cents of a non-negative amount with at most 2 places; floats are refused."""
    if isinstance(amount, bool) or not isinstance(amount, Decimal | int):
        raise InvalidRefundInputError(f"{what}: must be a Decimal amount, got {amount!r}")
    value = Decimal(amount)
    if not value.is_finite() or value < 0:
        raise InvalidRefundInputError(f"{what}: must be a finite amount >= 0, got {amount}")
    cents = value.scaleb(2)
    if cents != cents.to_integral_value():
        raise InvalidRefundInputError(f"{what}: money has at most 2 decimal places, got {amount}")
    return int(cents)


def to_money(cents: int) -> Decimal:
    return Decimal(cents).scaleb(-2)


def prorated(total_cents: int, units: int, first: int, more: int) -> int:
    """The share of `total_cents` over `units` units for units first+1 .. first+more (see module doc)."""
    return total_cents * (first + more) // units - total_cents * first // units


def _count(value: int, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidRefundInputError(f"{what}: must be a whole number >= {minimum}, got {value!r}")
    return value


def _frozen(mapping: Mapping[K, V]) -> Mapping[K, V]:
    return MappingProxyType(dict(mapping))


# --- inputs ------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class OrderLine:
    """A bought line; `discount` is the promotion discount allocated to the whole line."""

    line_no: int
    sku: str
    category: str | None
    quantity: int
    unit_price: Decimal
    discount: Decimal = ZERO

    def __post_init__(self) -> None:
        where = f"order line {self.line_no}"
        _count(self.quantity, f"{where} quantity", 1)
        gross = to_cents(self.unit_price, f"{where} unit_price") * self.quantity
        if to_cents(self.discount, f"{where} discount") > gross:
            raise InvalidRefundInputError(
                f"{where}: discount {self.discount} exceeds the line's value {to_money(gross)}"
            )

    @property
    def paid_cents(self) -> int:
        """What the customer paid for the whole line: units at unit price less the line discount."""
        return to_cents(self.unit_price, "unit_price") * self.quantity - to_cents(self.discount, "discount")

    @property
    def paid(self) -> Decimal:
        return to_money(self.paid_cents)


@dataclass(frozen=True, kw_only=True)
class Payment:
    """One tender the order was paid with."""

    payment_id: str
    method: str
    amount: Decimal

    def __post_init__(self) -> None:
        if self.method not in enums.PAYMENT_METHODS:
            raise InvalidRefundInputError(f"payment {self.payment_id}: unknown method {self.method!r}")
        to_cents(self.amount, f"payment {self.payment_id} amount")


@dataclass(frozen=True, kw_only=True)
class OrderSnapshot:
    """The order as it was paid. `loyalty_points_earned` is what the ledger credited for it; None means
    the policy's earn rate on the merchandise paid."""

    order_id: str
    lines: tuple[OrderLine, ...]
    payments: tuple[Payment, ...]
    shipping_amount: Decimal = ZERO
    loyalty_points_earned: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "lines", tuple(self.lines))
        object.__setattr__(self, "payments", tuple(self.payments))
        if not self.lines:
            raise InvalidRefundInputError(f"order {self.order_id}: has no lines")
        for what, keys in (
            ("line_no", [line.line_no for line in self.lines]),
            ("payment_id", [p.payment_id for p in self.payments]),
        ):
            if len(set(keys)) != len(keys):
                raise InvalidRefundInputError(f"order {self.order_id}: duplicate {what}")
        to_cents(self.shipping_amount, f"order {self.order_id} shipping_amount")
        if self.loyalty_points_earned is not None:
            _count(self.loyalty_points_earned, f"order {self.order_id} loyalty_points_earned", 0)

    @property
    def merchandise_paid(self) -> Decimal:
        return to_money(sum(line.paid_cents for line in self.lines))

    @property
    def total(self) -> Decimal:
        """Merchandise paid plus shipping: what the payments should add up to."""
        return self.merchandise_paid + self.shipping_amount

    def line(self, line_no: int) -> OrderLine:
        for line in self.lines:
            if line.line_no == line_no:
                return line
        raise UnknownOrderLineError(f"order {self.order_id} has no line {line_no}")


@dataclass(frozen=True, kw_only=True)
class ReturnItem:
    """Units of one order line coming back; `condition` is what inspection found (None: not yet)."""

    line_no: int
    quantity: int
    reason: str
    condition: str | None = None

    def __post_init__(self) -> None:
        _count(self.quantity, f"returned line {self.line_no} quantity", 1)
        if self.reason not in enums.RETURN_REASONS:
            raise InvalidRefundInputError(f"returned line {self.line_no}: unknown reason {self.reason!r}")
        if self.condition is not None and self.condition not in enums.CONDITIONS:
            raise InvalidRefundInputError(
                f"returned line {self.line_no}: unknown condition {self.condition!r}"
            )


@dataclass(frozen=True, kw_only=True)
class PriorRefunds:
    """What earlier refunds of the same order already gave back.

    `units` and `merchandise` are per order line (`merchandise` before restocking fees; a line missing
    from it is taken to have had the prorated price of its `units`), `tenders` per payment id (net amounts
    actually refunded), `shipping` the shipping refunded, `loyalty_points` the points clawed back.
    """

    units: Mapping[int, int] = field(default_factory=dict)
    merchandise: Mapping[int, Decimal] = field(default_factory=dict)
    tenders: Mapping[str, Decimal] = field(default_factory=dict)
    shipping: Decimal = ZERO
    loyalty_points: int = 0

    def __post_init__(self) -> None:
        for name in ("units", "merchandise", "tenders"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        for line_no, units in self.units.items():
            _count(units, f"previously returned units of line {line_no}", 0)
        for line_no, amount in self.merchandise.items():
            to_cents(amount, f"previously refunded merchandise of line {line_no}")
        for payment_id, amount in self.tenders.items():
            to_cents(amount, f"previously refunded to payment {payment_id}")
        to_cents(self.shipping, "previously refunded shipping")
        _count(self.loyalty_points, "previously clawed back loyalty points", 0)

    def after(self, quote: RefundQuote) -> PriorRefunds:
        """These previous refunds plus `quote` (as the next return will see them)."""
        units = dict(self.units)
        merchandise = dict(self.merchandise)
        for line in quote.lines:
            # A line whose merchandise is derived from its units stays derived (the units say it all).
            if line.line_no in merchandise or not units.get(line.line_no):
                merchandise[line.line_no] = merchandise.get(line.line_no, ZERO) + line.merchandise
            units[line.line_no] = units.get(line.line_no, 0) + line.quantity
        tenders = dict(self.tenders)
        for allocation in quote.allocations:
            if allocation.payment_id is not None:
                tenders[allocation.payment_id] = tenders.get(allocation.payment_id, ZERO) + allocation.amount
        return PriorRefunds(
            units=units,
            merchandise=merchandise,
            tenders=tenders,
            shipping=self.shipping + quote.shipping,
            loyalty_points=self.loyalty_points + quote.loyalty_points_clawback,
        )


# --- outputs -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LineRefund:
    line_no: int
    quantity: int
    reason: str
    condition: str | None
    merchandise: Decimal
    shipping: Decimal
    restocking_fee: Decimal

    @property
    def net(self) -> Decimal:
        return self.merchandise + self.shipping - self.restocking_fee


@dataclass(frozen=True)
class Allocation:
    """Part of a refund paid back to one original tender, or (payment_id None) issued as new store credit."""

    payment_id: str | None
    method: str
    amount: Decimal


@dataclass(frozen=True)
class RefundQuote:
    """A refund: `total = merchandise + shipping - restocking_fee = sum(allocations)`."""

    policy_version: str
    lines: tuple[LineRefund, ...]
    merchandise: Decimal
    shipping: Decimal
    restocking_fee: Decimal
    total: Decimal
    allocations: tuple[Allocation, ...]
    new_store_credit: Decimal
    loyalty_points_clawback: int


@dataclass(frozen=True)
class ReceiptlessQuote:
    """Store credit for a return without proof of purchase."""

    policy_version: str
    quantity: int
    unit_credit: Decimal
    total: Decimal
    allocations: tuple[Allocation, ...]


# --- the calculator ----------------------------------------------------------------------------------


def quote_refund(
    policy: Policy,
    order: OrderSnapshot,
    items: Iterable[ReturnItem],
    prior: PriorRefunds | None = None,
) -> RefundQuote:
    """The refund for returning `items` of `order`, given what earlier refunds already gave back.

    Items are applied in the order given (one line may appear several times, e.g. with different reasons).
    """
    items = tuple(items)
    if prior is None:
        prior = PriorRefunds()
    if not items:
        raise InvalidRefundInputError(f"order {order.order_id}: a return needs at least one item")
    returned_units, refunded_merchandise = _previous_lines(order, prior)
    shipping_shares = _line_shipping_shares(order)
    shipping_left = max(to_cents(order.shipping_amount, "shipping") - to_cents(prior.shipping, "shipping"), 0)

    refunds: list[LineRefund] = []
    for item in items:
        line = order.line(item.line_no)
        if not policy.is_returnable(line.category):
            raise NotReturnableError(
                f"order {order.order_id} line {line.line_no}: {line.category} cannot be returned"
            )
        done = returned_units[line.line_no]
        if done + item.quantity > line.quantity:
            raise ExcessReturnQuantityError(
                f"order {order.order_id} line {line.line_no}: {item.quantity} unit(s) returned but only "
                f"{line.quantity - done} of {line.quantity} remain"
            )
        paid = line.paid_cents
        merchandise = prorated(paid, line.quantity, done, item.quantity)
        # Earlier refunds recorded outside this calculator may have given back more: never exceed the line.
        merchandise = max(min(merchandise, paid - refunded_merchandise[line.line_no]), 0)
        fee = _restocking_fee(policy, line.category, item, merchandise)
        shipping = 0
        if policy.refunds_shipping(item.reason):
            share = prorated(shipping_shares[line.line_no], line.quantity, done, item.quantity)
            shipping = min(share, shipping_left)
            shipping_left -= shipping
        returned_units[line.line_no] = done + item.quantity
        refunded_merchandise[line.line_no] += merchandise
        refunds.append(
            LineRefund(
                line_no=line.line_no,
                quantity=item.quantity,
                reason=item.reason,
                condition=item.condition,
                merchandise=to_money(merchandise),
                shipping=to_money(shipping),
                restocking_fee=to_money(fee),
            )
        )

    merchandise_cents = sum(to_cents(r.merchandise, "merchandise") for r in refunds)
    shipping_cents = sum(to_cents(r.shipping, "shipping") for r in refunds)
    fee_cents = sum(to_cents(r.restocking_fee, "fee") for r in refunds)
    total = merchandise_cents + shipping_cents - fee_cents
    allocations, unallocated = _allocate(policy, order, prior, total)
    return RefundQuote(
        policy_version=policy.version,
        lines=tuple(refunds),
        merchandise=to_money(merchandise_cents),
        shipping=to_money(shipping_cents),
        restocking_fee=to_money(fee_cents),
        total=to_money(total),
        allocations=allocations,
        new_store_credit=to_money(unallocated),
        loyalty_points_clawback=_loyalty_clawback(
            policy, order, prior, sum(refunded_merchandise.values()) - merchandise_cents, merchandise_cents
        ),
    )


def quote_receiptless(
    policy: Policy,
    *,
    lowest_price: Decimal,
    quantity: int = 1,
    channel: str,
    category: str | None = None,
    receiptless_returns_in_window: int = 0,
) -> ReceiptlessQuote:
    """Store credit for a receiptless return at `lowest_price`, the lowest price the item sold for in the
    policy's `receiptless.lowest_price_days` (looked up by the caller).

    `receiptless_returns_in_window` counts the customer's earlier receiptless returns within
    `receiptless.per_customer_days`, not this one. No fee, no shipping, no loyalty clawback: there is no
    order to take them from.
    """
    _count(quantity, "receiptless quantity", 1)
    _count(receiptless_returns_in_window, "receiptless returns in window", 0)
    unit = to_cents(lowest_price, "lowest_price")
    rules = policy.receiptless
    if not policy.receiptless_allowed(channel):
        raise ReceiptlessChannelError(
            f"receiptless returns are accepted only via {', '.join(rules.allowed_channels) or 'no channel'}"
            f", not {channel}"
        )
    if not policy.is_returnable(category):
        raise NotReturnableError(f"{category} cannot be returned")
    if receiptless_returns_in_window >= rules.max_per_customer:
        raise ReceiptlessLimitError(
            f"the customer already made {receiptless_returns_in_window} receiptless return(s) in "
            f"{rules.per_customer_days} days (limit {rules.max_per_customer})"
        )
    total = unit * quantity
    if total > to_cents(rules.max_value, "max_value"):
        raise ReceiptlessValueExceededError(
            f"receiptless store credit {to_money(total)} exceeds the maximum of {rules.max_value} per return"
        )
    allocations = (Allocation(None, "store_credit", to_money(total)),) if total else ()
    return ReceiptlessQuote(
        policy_version=policy.version,
        quantity=quantity,
        unit_credit=to_money(unit),
        total=to_money(total),
        allocations=allocations,
    )


# --- the parts ---------------------------------------------------------------------------------------


def _previous_lines(order: OrderSnapshot, prior: PriorRefunds) -> tuple[dict[int, int], dict[int, int]]:
    """Units returned and merchandise cents refunded so far, per order line."""
    line_nos = {line.line_no for line in order.lines}
    for line_no in (*prior.units, *prior.merchandise):
        if line_no not in line_nos:
            raise InvalidRefundInputError(
                f"order {order.order_id}: previous refunds name unknown line {line_no}"
            )
    units: dict[int, int] = {}
    merchandise: dict[int, int] = {}
    for line in order.lines:
        done = prior.units.get(line.line_no, 0)
        if done > line.quantity:
            raise InvalidRefundInputError(
                f"order {order.order_id} line {line.line_no}: {done} units previously returned "
                f"of {line.quantity}"
            )
        units[line.line_no] = done
        if line.line_no in prior.merchandise:
            merchandise[line.line_no] = to_cents(prior.merchandise[line.line_no], "merchandise")
            if merchandise[line.line_no] > line.paid_cents:
                raise InvalidRefundInputError(
                    f"order {order.order_id} line {line.line_no}: {prior.merchandise[line.line_no]} "
                    f"previously refunded but only {line.paid} paid"
                )
        else:
            merchandise[line.line_no] = prorated(line.paid_cents, line.quantity, 0, done)
    return units, merchandise


def _line_shipping_shares(order: OrderSnapshot) -> dict[int, int]:
    """The order's shipping spread over its lines by merchandise value paid (by units when every line was
    free), with the same cumulative floor as units, so the shares add up to the shipping exactly."""
    lines = sorted(order.lines, key=lambda line: line.line_no)
    weights = [line.paid_cents for line in lines]
    if sum(weights) == 0:
        weights = [line.quantity for line in lines]
    shipping = to_cents(order.shipping_amount, "shipping")
    total_weight = sum(weights)
    shares: dict[int, int] = {}
    cumulative = 0
    for line, weight in zip(lines, weights, strict=True):
        shares[line.line_no] = prorated(shipping, total_weight, cumulative, weight)
        cumulative += weight
    return shares


def _restocking_fee(policy: Policy, category: str | None, item: ReturnItem, merchandise: int) -> int:
    rule = policy.restocking_fee_rule(category, item.condition, item.reason)
    if rule is None or merchandise == 0:
        return 0
    fee = int((Decimal(merchandise) * rule.percent / 100).to_integral_value(ROUND_HALF_UP))
    fee = max(fee, to_cents(rule.minimum, "minimum"))
    if rule.maximum is not None:
        fee = min(fee, to_cents(rule.maximum, "maximum"))
    return min(fee, merchandise)


def _allocate(
    policy: Policy, order: OrderSnapshot, prior: PriorRefunds, total: int
) -> tuple[tuple[Allocation, ...], int]:
    """Spread `total` cents over the original tenders in policy priority (ties: order of payment), each up
    to what it paid minus what was already refunded to it; the rest is new store credit."""
    payment_ids = {p.payment_id for p in order.payments}
    for payment_id in prior.tenders:
        if payment_id not in payment_ids:
            raise InvalidRefundInputError(
                f"order {order.order_id}: previous refunds name unknown payment {payment_id}"
            )
    ranked = sorted(enumerate(order.payments), key=lambda ip: (policy.tender_rank(ip[1].method), ip[0]))
    allocations: list[Allocation] = []
    remaining = total
    for _, payment in ranked:
        refunded = prior.tenders.get(payment.payment_id, ZERO)
        room = to_cents(payment.amount, "amount") - to_cents(refunded, "refunded")
        take = min(max(room, 0), remaining)
        if take > 0:
            allocations.append(Allocation(payment.payment_id, payment.method, to_money(take)))
            remaining -= take
    if remaining > 0:
        allocations.append(Allocation(None, "store_credit", to_money(remaining)))
    return tuple(allocations), remaining


def _loyalty_clawback(
    policy: Policy, order: OrderSnapshot, prior: PriorRefunds, refunded_before: int, refunded_now: int
) -> int:
    """Points earned on the merchandise refunded now: the order's earned points in proportion to the
    merchandise refunded (cumulative floor, so returning everything takes back exactly what was earned),
    never more than earned minus already clawed back."""
    if not policy.loyalty.claw_back_on_refund or refunded_now == 0:
        return 0
    merchandise_paid = sum(line.paid_cents for line in order.lines)
    earned = order.loyalty_points_earned
    if earned is None:
        earned = policy.loyalty_points(to_money(merchandise_paid))
    points = prorated(earned, merchandise_paid, refunded_before, refunded_now)
    return max(min(points, earned - prior.loyalty_points), 0)
