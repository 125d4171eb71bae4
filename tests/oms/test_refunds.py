"""The refund calculator: worked examples (one of them is docs/lifecycle.md's), typed refusals, and properties
over random orders and random sequences of partial returns."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oms import enums
from oms.policy import Policy, RestockingFeeRule, load_policy
from oms.refunds import (
    Allocation,
    ExcessReturnQuantityError,
    InvalidRefundInputError,
    LineRefund,
    NotReturnableError,
    OrderLine,
    OrderSnapshot,
    Payment,
    PriorRefunds,
    ReceiptlessChannelError,
    ReceiptlessLimitError,
    ReceiptlessValueExceededError,
    RefundError,
    RefundQuote,
    ReturnItem,
    UnknownOrderLineError,
    quote_receiptless,
    quote_refund,
)
from oms.settings import DEFAULT_POLICY_PATH

D = Decimal
POLICY = load_policy(DEFAULT_POLICY_PATH)
RETURNABLE = ("apparel", "shoes", "electronics", "home", "beauty", "toys", "sports", "accessories")
PROPERTY_SETTINGS = settings(max_examples=500, deadline=None)


def money(cents: int) -> Decimal:
    return Decimal(cents).scaleb(-2)


def line(
    line_no: int, quantity: int, unit_price: str, discount: str = "0.00", category: str = "apparel"
) -> OrderLine:
    return OrderLine(
        line_no=line_no,
        sku=f"SKU-{line_no}",
        category=category,
        quantity=quantity,
        unit_price=D(unit_price),
        discount=D(discount),
    )


def order(*lines: OrderLine, payments: dict[str, tuple[str, str]], shipping: str = "0.00") -> OrderSnapshot:
    return OrderSnapshot(
        order_id="O-1",
        lines=lines,
        payments=tuple(Payment(payment_id=pid, method=m, amount=D(a)) for pid, (m, a) in payments.items()),
        shipping_amount=D(shipping),
    )


# --- the worked example of docs/lifecycle.md ----------------------------------------------------


def readme_order() -> OrderSnapshot:
    """Bought online: three lines, a 20 % promotion (43.30 off 216.50, allocated to the lines), 4.95
    shipping, paid 50.00 by gift card and the rest by card."""
    return OrderSnapshot(
        order_id="W-1001",
        lines=(
            line(1, 1, "129.00", "25.80", category="electronics"),  # wireless earbuds
            line(2, 2, "25.00", "10.00", category="apparel"),  # two T-shirts
            line(3, 3, "12.50", "7.50", category="home"),  # three mugs
        ),
        payments=(
            Payment(payment_id="PAY-CARD", method="card", amount=D("128.15")),
            Payment(payment_id="PAY-GC", method="gift_card", amount=D("50.00")),
        ),
        shipping_amount=D("4.95"),
    )


def test_readme_example_opened_earbuds_returned_in_store() -> None:
    snapshot = readme_order()
    assert snapshot.merchandise_paid == D("173.20")
    assert snapshot.total == D("178.15") == sum(p.amount for p in snapshot.payments)

    quote = quote_refund(
        POLICY, snapshot, [ReturnItem(line_no=1, quantity=1, reason="changed_mind", condition="open_box")]
    )

    assert quote == RefundQuote(
        policy_version=POLICY.version,
        lines=(
            LineRefund(
                line_no=1,
                quantity=1,
                reason="changed_mind",
                condition="open_box",
                merchandise=D("103.20"),  # 129.00 less the line's 25.80 share of the promotion
                shipping=D("0.00"),  # changed mind: the retailer is not at fault
                restocking_fee=D("15.48"),  # 15 % of 103.20, within 5.00..75.00
            ),
        ),
        merchandise=D("103.20"),
        shipping=D("0.00"),
        restocking_fee=D("15.48"),
        total=D("87.72"),
        allocations=(
            Allocation("PAY-GC", "gift_card", D("50.00")),  # gift card first (policy priority)
            Allocation("PAY-CARD", "card", D("37.72")),
        ),
        new_store_credit=D("0.00"),
        loyalty_points_clawback=103,  # 173 points earned on 173.20; 173 x 103.20 / 173.20 = 103.08
    )


def test_readme_example_continued_the_rest_comes_back_defective() -> None:
    snapshot = readme_order()
    first = quote_refund(
        POLICY, snapshot, [ReturnItem(line_no=1, quantity=1, reason="changed_mind", condition="open_box")]
    )
    rest = quote_refund(
        POLICY,
        snapshot,
        [
            ReturnItem(line_no=2, quantity=2, reason="defective"),
            ReturnItem(line_no=3, quantity=3, reason="defective"),
        ],
        PriorRefunds().after(first),
    )
    # Shipping 4.95 is spread over the lines by value paid: 2.94 / 1.15 / 0.86 (cumulative floor). The
    # earbuds' share was forfeited with their changed-mind return; the defective lines get theirs.
    assert [(r.merchandise, r.shipping) for r in rest.lines] == [
        (D("40.00"), D("1.15")),
        (D("30.00"), D("0.86")),
    ]
    assert rest.total == D("72.01")
    assert rest.allocations == (Allocation("PAY-CARD", "card", D("72.01")),)  # the gift card is used up
    assert first.loyalty_points_clawback + rest.loyalty_points_clawback == 173


# --- worked examples ---------------------------------------------------------------------------------


def test_line_discount_is_prorated_so_cents_are_conserved() -> None:
    snapshot = order(line(1, 3, "4.00", "2.00"), payments={"P": ("card", "10.00")})  # 10.00 over 3 units
    prior = PriorRefunds()
    refunds = []
    for _ in range(3):
        quote = quote_refund(
            POLICY, snapshot, [ReturnItem(line_no=1, quantity=1, reason="doesnt_fit")], prior
        )
        refunds.append(quote.merchandise)
        prior = prior.after(quote)
    assert refunds == [D("3.33"), D("3.33"), D("3.34")]
    assert prior.tenders == {"P": D("10.00")}


def test_previous_merchandise_defaults_to_the_prorated_price_of_the_units() -> None:
    snapshot = order(line(1, 3, "4.00", "2.00"), payments={"P": ("card", "10.00")})
    derived = PriorRefunds(units={1: 1}, tenders={"P": D("3.33")})
    explicit = PriorRefunds(units={1: 1}, merchandise={1: D("3.33")}, tenders={"P": D("3.33")})
    item = [ReturnItem(line_no=1, quantity=2, reason="doesnt_fit")]
    assert quote_refund(POLICY, snapshot, item, derived) == quote_refund(POLICY, snapshot, item, explicit)
    after = derived.after(quote_refund(POLICY, snapshot, item, derived))
    assert (after.units, after.merchandise, after.tenders) == ({1: 3}, {}, {"P": D("10.00")})
    # An earlier refund recorded as more than the units' prorated price caps what is left.
    generous = PriorRefunds(units={1: 1}, merchandise={1: D("9.00")})
    assert quote_refund(POLICY, snapshot, item, generous).merchandise == D("1.00")


def test_shipping_only_when_retailer_at_fault_prorated_by_value() -> None:
    snapshot = order(
        line(1, 1, "30.00"), line(2, 1, "10.00"), payments={"P": ("card", "45.99")}, shipping="5.99"
    )
    changed_mind = quote_refund(POLICY, snapshot, [ReturnItem(line_no=1, quantity=1, reason="changed_mind")])
    assert changed_mind.shipping == D("0.00")
    wrong_item = quote_refund(POLICY, snapshot, [ReturnItem(line_no=1, quantity=1, reason="wrong_item")])
    assert wrong_item.shipping == D("4.49")  # 3/4 of the merchandise value: floor(599 x 3 / 4)
    both = quote_refund(
        POLICY,
        snapshot,
        [
            ReturnItem(line_no=1, quantity=1, reason="wrong_item"),
            ReturnItem(line_no=2, quantity=1, reason="defective"),
        ],
    )
    assert both.shipping == D("5.99")
    assert both.total == D("45.99")


def test_shipping_never_more_than_paid_minus_already_refunded() -> None:
    snapshot = order(line(1, 2, "20.00"), payments={"P": ("card", "45.00")}, shipping="5.00")
    prior = PriorRefunds(shipping=D("4.00"))  # e.g. a goodwill shipping refund recorded earlier
    quote = quote_refund(POLICY, snapshot, [ReturnItem(line_no=1, quantity=2, reason="defective")], prior)
    assert quote.shipping == D("1.00")


@pytest.mark.parametrize(
    ("unit_price", "expected_fee"),
    [
        ("100.00", "15.00"),  # 15 %
        ("100.03", "15.00"),  # 15.0045 rounds half-up to 15.00
        ("100.10", "15.02"),  # 15.015 rounds half-up to 15.02
        ("20.00", "5.00"),  # 3.00 raised to the 5.00 minimum
        ("3.00", "3.00"),  # the minimum, but never more than the merchandise refund
        ("900.00", "75.00"),  # 135.00 lowered to the 75.00 maximum
    ],
)
def test_restocking_fee_rounding_and_bounds(unit_price: str, expected_fee: str) -> None:
    snapshot = order(line(1, 1, unit_price, category="electronics"), payments={"P": ("card", unit_price)})
    quote = quote_refund(
        POLICY, snapshot, [ReturnItem(line_no=1, quantity=1, reason="changed_mind", condition="used")]
    )
    assert quote.restocking_fee == D(expected_fee)
    assert quote.total == D(unit_price) - D(expected_fee)


def test_no_restocking_fee_when_electronics_are_defective_or_unopened() -> None:
    snapshot = order(line(1, 2, "50.00", category="electronics"), payments={"P": ("card", "100.00")})
    for item in (
        ReturnItem(line_no=1, quantity=1, reason="defective", condition="open_box"),
        ReturnItem(line_no=1, quantity=1, reason="changed_mind", condition="new"),
    ):
        assert quote_refund(POLICY, snapshot, [item]).restocking_fee == D("0.00")


def test_tenders_capped_at_paid_minus_already_refunded() -> None:
    snapshot = order(
        line(1, 4, "25.00"),
        payments={"GC": ("gift_card", "30.00"), "SC": ("store_credit", "20.00"), "CARD": ("card", "50.00")},
    )
    prior = PriorRefunds(units={1: 1}, tenders={"GC": D("25.00")})
    quote = quote_refund(POLICY, snapshot, [ReturnItem(line_no=1, quantity=2, reason="doesnt_fit")], prior)
    assert quote.allocations == (
        Allocation("GC", "gift_card", D("5.00")),
        Allocation("SC", "store_credit", D("20.00")),
        Allocation("CARD", "card", D("25.00")),
    )


def test_what_original_tenders_cannot_take_becomes_new_store_credit() -> None:
    # An inconsistent order: payments add up to 90.00 of a 100.00 total.
    snapshot = order(line(1, 2, "50.00"), payments={"CARD": ("card", "90.00")})
    quote = quote_refund(POLICY, snapshot, [ReturnItem(line_no=1, quantity=2, reason="doesnt_fit")])
    assert quote.allocations == (
        Allocation("CARD", "card", D("90.00")),
        Allocation(None, "store_credit", D("10.00")),
    )
    assert quote.new_store_credit == D("10.00")


def test_loyalty_clawback_follows_the_points_actually_earned() -> None:
    snapshot = OrderSnapshot(
        order_id="O-2",
        lines=(line(1, 2, "50.00"),),
        payments=(Payment(payment_id="P", method="card", amount=D("100.00")),),
        loyalty_points_earned=250,  # e.g. a double-points tier: the ledger, not the base rate, counts
    )
    first = quote_refund(POLICY, snapshot, [ReturnItem(line_no=1, quantity=1, reason="doesnt_fit")])
    assert first.loyalty_points_clawback == 125
    capped = quote_refund(
        POLICY,
        snapshot,
        [ReturnItem(line_no=1, quantity=1, reason="doesnt_fit")],
        PriorRefunds(units={1: 1}, loyalty_points=240),  # more was clawed back earlier than this line earned
    )
    assert capped.loyalty_points_clawback == 10


def test_no_clawback_when_the_policy_says_so() -> None:
    policy = POLICY.model_copy(
        update={"loyalty": POLICY.loyalty.model_copy(update={"claw_back_on_refund": False})}
    )
    snapshot = order(line(1, 1, "50.00"), payments={"P": ("card", "50.00")})
    quote = quote_refund(policy, snapshot, [ReturnItem(line_no=1, quantity=1, reason="doesnt_fit")])
    assert quote.loyalty_points_clawback == 0


# --- refusals ----------------------------------------------------------------------------------------


def test_returning_more_units_than_remain_is_refused() -> None:
    snapshot = order(line(1, 2, "10.00"), payments={"P": ("card", "20.00")})
    with pytest.raises(
        ExcessReturnQuantityError, match="line 1: 2 unit\\(s\\) returned but only 1 of 2 remain"
    ):
        quote_refund(
            POLICY, snapshot, [ReturnItem(line_no=1, quantity=2, reason="other")], PriorRefunds(units={1: 1})
        )
    with pytest.raises(ExcessReturnQuantityError):  # the same line twice in one return counts too
        quote_refund(
            POLICY,
            snapshot,
            [
                ReturnItem(line_no=1, quantity=2, reason="other"),
                ReturnItem(line_no=1, quantity=1, reason="other"),
            ],
        )


def test_unknown_line_and_non_returnable_category_are_refused() -> None:
    snapshot = order(line(1, 1, "25.00", category="gift_cards"), payments={"P": ("card", "25.00")})
    with pytest.raises(UnknownOrderLineError, match="no line 7"):
        quote_refund(POLICY, snapshot, [ReturnItem(line_no=7, quantity=1, reason="other")])
    with pytest.raises(NotReturnableError, match="gift_cards"):
        quote_refund(POLICY, snapshot, [ReturnItem(line_no=1, quantity=1, reason="other")])


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda: line(1, 1, "10.005"), id="money-3-places"),
        pytest.param(lambda: Payment(payment_id="P", method="card", amount=10.0), id="float-money"),
        pytest.param(lambda: line(1, 1, "-1.00"), id="negative-price"),
        pytest.param(lambda: line(1, 2, "5.00", "10.01"), id="discount-above-line"),
        pytest.param(lambda: line(1, 0, "5.00"), id="zero-quantity"),
        pytest.param(
            lambda: Payment(payment_id="P", method="bitcoin", amount=D("1.00")), id="unknown-tender"
        ),
        pytest.param(lambda: ReturnItem(line_no=1, quantity=1, reason="bored"), id="unknown-reason"),
        pytest.param(
            lambda: ReturnItem(line_no=1, quantity=1, reason="other", condition="meh"), id="unknown-condition"
        ),
        pytest.param(lambda: PriorRefunds(tenders={"P": D("-0.01")}), id="negative-prior"),
        pytest.param(
            lambda: order(line(1, 1, "1.00"), line(1, 1, "2.00"), payments={}), id="duplicate-line-no"
        ),
    ],
)
def test_malformed_input_is_refused(build: Callable[[], object]) -> None:
    with pytest.raises(InvalidRefundInputError):
        build()


def test_previous_refunds_that_do_not_fit_the_order_are_refused() -> None:
    snapshot = order(line(1, 2, "10.00"), payments={"P": ("card", "20.00")})
    item = [ReturnItem(line_no=1, quantity=1, reason="other")]
    for prior in (
        PriorRefunds(units={1: 3}),
        PriorRefunds(units={9: 1}),
        PriorRefunds(tenders={"NOPE": D("1.00")}),
        PriorRefunds(units={1: 1}, merchandise={1: D("20.01")}),
    ):
        with pytest.raises(InvalidRefundInputError):
            quote_refund(POLICY, snapshot, item, prior)


def test_receiptless_store_credit_at_the_lowest_recent_price() -> None:
    quote = quote_receiptless(
        POLICY, lowest_price=D("39.99"), quantity=2, channel="store", category="apparel"
    )
    assert quote.total == D("79.98")
    assert quote.allocations == (Allocation(None, "store_credit", D("79.98")),)
    assert quote.policy_version == POLICY.version


def test_receiptless_refusals_are_typed() -> None:
    with pytest.raises(ReceiptlessValueExceededError, match=r"150\.03 exceeds the maximum of 150\.00"):
        quote_receiptless(POLICY, lowest_price=D("50.01"), quantity=3, channel="store")
    assert quote_receiptless(POLICY, lowest_price=D("50.00"), quantity=3, channel="store").total == D(
        "150.00"
    )
    with pytest.raises(ReceiptlessChannelError, match="only via store, not web"):
        quote_receiptless(POLICY, lowest_price=D("10.00"), channel="web")
    with pytest.raises(ReceiptlessLimitError):
        quote_receiptless(POLICY, lowest_price=D("10.00"), channel="store", receiptless_returns_in_window=3)
    with pytest.raises(NotReturnableError):
        quote_receiptless(POLICY, lowest_price=D("10.00"), channel="store", category="gift_cards")
    assert issubclass(ReceiptlessValueExceededError, RefundError)


# --- properties over random orders and random sequences of partial returns ----------------------------


@st.composite
def orders(draw: st.DrawFn, *, consistent: bool = True) -> OrderSnapshot:
    lines = []
    for line_no in range(1, draw(st.integers(1, 5)) + 1):
        quantity = draw(st.integers(1, 6))
        unit = draw(st.integers(0, 60_000))
        discount = draw(st.one_of(st.just(0), st.just(unit * quantity // 5), st.integers(0, unit * quantity)))
        lines.append(
            OrderLine(
                line_no=line_no,
                sku=f"SKU-{line_no}",
                category=draw(st.sampled_from(RETURNABLE)),
                quantity=quantity,
                unit_price=money(unit),
                discount=money(discount),
            )
        )
    shipping = draw(st.one_of(st.just(0), st.integers(0, 2_500)))
    total = sum(line.paid_cents for line in lines) + shipping
    if not consistent:
        total = draw(st.integers(0, total))  # payments short of the order total
    n_tenders = draw(st.integers(1, 3))
    cuts = sorted(draw(st.lists(st.integers(0, total), min_size=n_tenders - 1, max_size=n_tenders - 1)))
    amounts = [b - a for a, b in zip([0, *cuts], [*cuts, total], strict=True)]
    methods = draw(st.lists(st.sampled_from(enums.PAYMENT_METHODS), min_size=n_tenders, max_size=n_tenders))
    payments = tuple(
        Payment(payment_id=f"PAY-{i}", method=method, amount=money(amount))
        for i, (method, amount) in enumerate(zip(methods, amounts, strict=True))
    )
    return OrderSnapshot(
        order_id="O-P", lines=tuple(lines), payments=payments, shipping_amount=money(shipping)
    )


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    """The default policy, with a random tender priority and sometimes one catch-all fee rule."""
    update: dict[str, object] = {"tender_priority": tuple(draw(st.permutations(enums.PAYMENT_METHODS)))}
    if draw(st.booleans()):
        minimum = draw(st.integers(0, 2_000))
        maximum = draw(st.one_of(st.none(), st.integers(minimum, 20_000)))
        rule = RestockingFeeRule(
            percent=D(draw(st.integers(0, 1000))) / 10,
            minimum=money(minimum),
            maximum=None if maximum is None else money(maximum),
        )
        update["restocking_fees"] = (rule,)
    return POLICY.model_copy(update=update)


def draw_returns(data: st.DataObject, snapshot: OrderSnapshot, *, finish: bool) -> list[list[ReturnItem]]:
    """A sequence of returns of random units of random lines; with `finish`, a last return takes the rest."""
    remaining = {line.line_no: line.quantity for line in snapshot.lines}
    returns: list[list[ReturnItem]] = []
    for _ in range(data.draw(st.integers(1, 5), label="returns")):
        items = []
        for _ in range(data.draw(st.integers(1, 3), label="items")):
            open_lines = sorted(n for n, left in remaining.items() if left)
            if not open_lines:
                break
            line_no = data.draw(st.sampled_from(open_lines))
            quantity = data.draw(st.integers(1, remaining[line_no]))
            remaining[line_no] -= quantity
            items.append(
                ReturnItem(
                    line_no=line_no,
                    quantity=quantity,
                    reason=data.draw(st.sampled_from(enums.RETURN_REASONS)),
                    condition=data.draw(st.one_of(st.none(), st.sampled_from(enums.CONDITIONS))),
                )
            )
        if items:
            returns.append(items)
    rest = [(n, left) for n, left in sorted(remaining.items()) if left]
    if finish and rest:
        reasons = st.sampled_from(enums.RETURN_REASONS)
        returns.append([ReturnItem(line_no=n, quantity=q, reason=data.draw(reasons)) for n, q in rest])
    return returns


def run(policy: Policy, snapshot: OrderSnapshot, returns: list[list[ReturnItem]]) -> list[RefundQuote]:
    prior = PriorRefunds()
    quotes = []
    for items in returns:
        quote = quote_refund(policy, snapshot, items, prior)
        assert quote_refund(policy, snapshot, items, prior) == quote  # deterministic
        quotes.append(quote)
        prior = prior.after(quote)
    return quotes


def check_each_quote(policy: Policy, snapshot: OrderSnapshot, quote: RefundQuote) -> None:
    zero = D("0.00")
    for refund in quote.lines:
        assert refund.merchandise >= zero and refund.shipping >= zero and refund.restocking_fee >= zero
        assert refund.restocking_fee <= refund.merchandise
    assert quote.merchandise == sum((r.merchandise for r in quote.lines), zero)
    assert quote.shipping == sum((r.shipping for r in quote.lines), zero)
    assert quote.restocking_fee == sum((r.restocking_fee for r in quote.lines), zero)
    assert quote.total == quote.merchandise + quote.shipping - quote.restocking_fee >= zero
    assert sum((a.amount for a in quote.allocations), zero) == quote.total  # cents conserved
    assert all(a.amount > zero for a in quote.allocations)
    assert quote.loyalty_points_clawback >= 0
    for amount in (quote.total, quote.merchandise, *(a.amount for a in quote.allocations)):
        assert amount == amount.quantize(D("0.01"))
    # New store credit, when any, is last and reported.
    credit = [a for a in quote.allocations if a.payment_id is None]
    assert sum((a.amount for a in credit), zero) == quote.new_store_credit
    assert all(a.payment_id is None for a in quote.allocations[len(quote.allocations) - len(credit) :])
    # Tenders in policy priority.
    methods = {p.payment_id: p.method for p in snapshot.payments}
    ranks = [policy.tender_rank(methods[a.payment_id]) for a in quote.allocations if a.payment_id]
    assert ranks == sorted(ranks)


def check_totals(snapshot: OrderSnapshot, quotes: list[RefundQuote]) -> dict[str, Decimal]:
    """Order-level invariants over the whole sequence; returns the cumulative figures."""
    per_tender: dict[str, Decimal] = defaultdict(Decimal)
    per_line: dict[int, Decimal] = defaultdict(Decimal)
    for quote in quotes:
        for allocation in quote.allocations:
            if allocation.payment_id is not None:
                per_tender[allocation.payment_id] += allocation.amount
        for refund in quote.lines:
            per_line[refund.line_no] += refund.merchandise
    for payment in snapshot.payments:
        assert per_tender[payment.payment_id] <= payment.amount
    for order_line in snapshot.lines:
        assert per_line[order_line.line_no] <= order_line.paid
    totals = {
        name: sum((getattr(q, name) for q in quotes), D("0.00"))
        for name in ("merchandise", "shipping", "restocking_fee", "total", "new_store_credit")
    }
    assert totals["shipping"] <= snapshot.shipping_amount
    assert totals["merchandise"] <= snapshot.merchandise_paid
    assert sum(q.loyalty_points_clawback for q in quotes) <= POLICY.loyalty_points(snapshot.merchandise_paid)
    totals["tenders"] = sum(per_tender.values(), D("0.00"))
    return totals


@PROPERTY_SETTINGS
@given(snapshot=orders(), policy=policies(), data=st.data())
def test_any_sequence_of_partial_returns_stays_within_what_was_paid(
    snapshot: OrderSnapshot, policy: Policy, data: st.DataObject
) -> None:
    returns = draw_returns(data, snapshot, finish=data.draw(st.booleans(), label="finish"))
    quotes = run(policy, snapshot, returns)
    for quote in quotes:
        check_each_quote(policy, snapshot, quote)
        assert quote.new_store_credit == D("0.00")  # payments cover the order
    check_totals(snapshot, quotes)


@PROPERTY_SETTINGS
@given(snapshot=orders(), policy=policies(), data=st.data())
def test_returning_everything_refunds_exactly_what_was_paid_less_fees(
    snapshot: OrderSnapshot, policy: Policy, data: st.DataObject
) -> None:
    returns = draw_returns(data, snapshot, finish=True)
    quotes = run(policy, snapshot, returns)
    totals = check_totals(snapshot, quotes)
    assert totals["merchandise"] == snapshot.merchandise_paid
    assert totals["total"] == snapshot.merchandise_paid + totals["shipping"] - totals["restocking_fee"]
    assert totals["tenders"] == totals["total"]
    at_fault = [policy.refunds_shipping(i.reason) for items in returns for i in items]
    if all(at_fault):
        assert totals["shipping"] == snapshot.shipping_amount
    if not any(at_fault):
        assert totals["shipping"] == D("0.00")
    earned = policy.loyalty_points(snapshot.merchandise_paid)
    assert sum(q.loyalty_points_clawback for q in quotes) == earned


@PROPERTY_SETTINGS
@given(snapshot=orders(consistent=False), data=st.data())
def test_short_paid_orders_put_the_rest_on_new_store_credit(
    snapshot: OrderSnapshot, data: st.DataObject
) -> None:
    returns = draw_returns(data, snapshot, finish=data.draw(st.booleans(), label="finish"))
    quotes = run(POLICY, snapshot, returns)
    for quote in quotes:
        check_each_quote(POLICY, snapshot, quote)
    totals = check_totals(snapshot, quotes)
    paid = sum((p.amount for p in snapshot.payments), D("0.00"))
    # Tenders take what they can, in full, before any new store credit is issued.
    assert totals["tenders"] == min(totals["total"], paid)
    assert totals["new_store_credit"] == max(totals["total"] - paid, D("0.00"))


@PROPERTY_SETTINGS
@given(snapshot=orders(), data=st.data())
def test_quote_does_not_depend_on_how_previous_refunds_are_keyed(
    snapshot: OrderSnapshot, data: st.DataObject
) -> None:
    returns = draw_returns(data, snapshot, finish=False)
    prior = PriorRefunds()
    for items in returns[:-1]:
        prior = prior.after(quote_refund(POLICY, snapshot, items, prior))
    reordered = PriorRefunds(
        units=dict(reversed(prior.units.items())),
        merchandise=dict(reversed(prior.merchandise.items())),
        tenders=dict(reversed(prior.tenders.items())),
        shipping=prior.shipping,
        loyalty_points=prior.loyalty_points,
    )
    assert quote_refund(POLICY, snapshot, returns[-1], reordered) == quote_refund(
        POLICY, snapshot, returns[-1], prior
    )
