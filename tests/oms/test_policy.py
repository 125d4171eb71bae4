"""The returns policy file: the default loads, its helpers answer per the file, and each kind of broken
policy is refused with one error naming the file and the key."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import get_args

import pytest

from oms import enums
from oms.errors import RecoupError
from oms.policy import (
    Condition,
    PaymentMethod,
    Policy,
    PolicyError,
    Reason,
    ReturnChannel,
    load_policy,
    parse_policy,
)
from oms.settings import DEFAULT_POLICY_PATH

DEFAULT_TEXT = DEFAULT_POLICY_PATH.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(DEFAULT_POLICY_PATH)


def _edited(old: str, new: str) -> str:
    assert DEFAULT_TEXT.count(old) == 1, f"the default policy no longer contains {old!r} exactly once"
    return DEFAULT_TEXT.replace(old, new)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text, encoding="utf-8")
    return path


# --- the default file --------------------------------------------------------------------------------


def test_default_policy_loads_with_its_version(policy: Policy) -> None:
    assert policy.version == "2026-12-07"
    assert policy.fraud.review_threshold == 0.2
    assert policy.fraud.deny_threshold == 0.9
    assert policy.fraud.review_capacity == 0.02
    assert policy.receiptless.max_value == Decimal("150.00")
    assert policy.receiptless.lowest_price_days == 90
    assert policy.velocity.max_refund_value == Decimal("1000.00")


def test_windows_per_category_with_default(policy: Policy) -> None:
    assert policy.window_days("electronics") == 14
    assert policy.window_days("apparel") == 30
    assert policy.window_days("garden") == 30  # not listed: the default
    assert policy.window_days(None) == 30
    assert policy.window_days("gift_cards") == 0


def test_gift_cards_are_not_returnable(policy: Policy) -> None:
    assert not policy.is_returnable("gift_cards")
    assert policy.is_returnable("electronics")
    assert policy.is_returnable(None)


def test_restocking_fee_for_opened_electronics_changed_mind_only(policy: Policy) -> None:
    assert policy.restocking_fee_rate("electronics", "open_box", "changed_mind") == Decimal("0.15")
    assert policy.restocking_fee_rate("electronics", "used", "doesnt_fit") == Decimal("0.15")
    assert policy.restocking_fee_rate("electronics", "new", "changed_mind") == 0
    assert policy.restocking_fee_rate("electronics", "open_box", "defective") == 0
    assert policy.restocking_fee_rate("apparel", "open_box", "changed_mind") == 0
    assert policy.restocking_fee_rate("electronics", None, "changed_mind") == 0
    rule = policy.restocking_fee_rule("electronics", "open_box", "changed_mind")
    assert rule is not None
    assert (rule.minimum, rule.maximum) == (Decimal("5.00"), Decimal("75.00"))


def test_shipping_refunded_only_when_retailer_at_fault(policy: Policy) -> None:
    at_fault = {r for r in enums.RETURN_REASONS if policy.refunds_shipping(r)}
    assert at_fault == {"defective", "damaged_in_transit", "wrong_item", "not_as_described"}


def test_tender_rank_follows_the_file(policy: Policy) -> None:
    ranked = sorted(enums.PAYMENT_METHODS, key=policy.tender_rank)
    assert ranked == ["gift_card", "store_credit", "loyalty_points", "card", "paypal", "cash", "other"]
    with pytest.raises(ValueError, match="bitcoin"):
        policy.tender_rank("bitcoin")


def test_score_decisions_at_the_thresholds(policy: Policy) -> None:
    assert policy.decision_for_score(0.19) == "approve"
    assert policy.decision_for_score(0.2) == "review"
    assert policy.decision_for_score(0.89) == "review"
    assert policy.decision_for_score(0.9) == "deny"


def test_velocity_and_receiptless_helpers(policy: Policy) -> None:
    assert not policy.velocity_exceeded(5, Decimal("1000.00"))
    assert policy.velocity_exceeded(6, Decimal("10.00"))
    assert policy.velocity_exceeded(1, Decimal("1000.01"))
    assert policy.receiptless_allowed("store")
    assert not policy.receiptless_allowed("web")


def test_loyalty_points_drop_fractions(policy: Policy) -> None:
    assert policy.loyalty_points(Decimal("173.99")) == 173
    assert policy.loyalty_points(Decimal("0.99")) == 0


def test_policy_vocabularies_are_the_data_contracts() -> None:
    assert get_args(PaymentMethod) == enums.PAYMENT_METHODS
    assert get_args(Reason) == enums.RETURN_REASONS
    assert get_args(Condition) == enums.CONDITIONS
    assert get_args(ReturnChannel) == enums.RETURN_CHANNELS


def test_settings_default_points_at_this_file() -> None:
    assert Path(__file__).parents[2] / "oms" / "policy.toml" == DEFAULT_POLICY_PATH


# --- broken policies ---------------------------------------------------------------------------------

BROKEN = [
    pytest.param(
        ("max_per_customer = 3", "max_per_custmer = 3"),
        "receiptless.max_per_custmer: unknown key (did you mean 'max_per_customer'?)",
        id="unknown-key",
    ),
    pytest.param(
        ("[loyalty]", "[loyalty]\nbonus = 2"),
        "loyalty.bonus: unknown key (allowed: points_per_currency_unit, claw_back_on_refund)",
        id="unknown-key-no-close-match",
    ),
    pytest.param(
        ("[fraud]", "[fraudd]"), "fraudd: unknown key (did you mean 'fraud'?)", id="unknown-section"
    ),
    pytest.param(
        ("max_returns = 5", 'max_returns = "five"'),
        "velocity.max_returns: must be a whole number, got 'five'",
        id="bad-type-int",
    ),
    pytest.param(
        ("claw_back_on_refund = true", "claw_back_on_refund = 1"),
        "loyalty.claw_back_on_refund: must be true or false, got 1",
        id="bad-type-bool",
    ),
    pytest.param(
        ('version = "2026-12-07"', "version = 2026"),
        "version: must be a non-empty string, got 2026",
        id="bad-type-version",
    ),
    pytest.param(
        ("review_threshold = 0.2", 'review_threshold = "high"'),
        "fraud.review_threshold: must be a number between 0 and 1, got 'high'",
        id="bad-type-score",
    ),
    pytest.param(
        ("max_value = 150.00", "max_value = 150.001"),
        "receiptless.max_value: money has at most 2 decimal places, got 150.001",
        id="money-3-places",
    ),
    pytest.param(
        ("max_refund_value = 1000.00", 'max_refund_value = "999.999"'),
        "velocity.max_refund_value: money has at most 2 decimal places, got 999.999",
        id="money-string-3-places",
    ),
    pytest.param(
        ("max_value = 150.00", "max_value = -1.00"),
        "receiptless.max_value: must not be negative, got -1.00",
        id="money-negative",
    ),
    pytest.param(
        ("review_threshold = 0.2", "review_threshold = 0.9"),
        "fraud.deny_threshold: must be above review_threshold (0.9), got 0.9",
        id="review-equals-deny",
    ),
    pytest.param(
        ("review_threshold = 0.2", "review_threshold = 0.95"),
        "fraud.deny_threshold: must be above review_threshold (0.95), got 0.9",
        id="review-above-deny",
    ),
    pytest.param(
        ("deny_threshold = 0.9", "deny_threshold = 1.5"),
        "fraud.deny_threshold: must be between 0 and 1, got 1.5",
        id="score-above-one",
    ),
    pytest.param(
        ("electronics = 14 ", "electronics = -14 "),
        "windows.categories.electronics: must be >= 0, got -14",
        id="negative-window",
    ),
    pytest.param(
        ("default_days = 30", "default_days = -1"),
        "windows.default_days: must be >= 0, got -1",
        id="negative-default-window",
    ),
    pytest.param(
        ('"cash", "other"]', '"cash", "bitcoin"]'),
        "tender_priority[6]: 'bitcoin' is not one of 'card', 'gift_card'",
        id="unknown-tender",
    ),
    pytest.param(
        ('"cash", "other"]', '"cash", "cash"]'),
        "tender_priority: 'cash' is listed twice",
        id="duplicate-tender",
    ),
    pytest.param(
        ('"cash", "other"]', '"cash"]'),
        "tender_priority: must list every payment method once; missing other",
        id="missing-tender",
    ),
    pytest.param(
        ("percent = 15", "percent = 150"),
        "restocking_fees[0].percent: must be between 0 and 100, got 150",
        id="fee-percent-out-of-range",
    ),
    pytest.param(
        ("minimum = 5.00\nmaximum = 75.00", "minimum = 5.00\nmaximum = 1.00"),
        "restocking_fees[0].maximum: must not be below minimum (5.00), got 1.00",
        id="fee-maximum-below-minimum",
    ),
    pytest.param(
        ('conditions = ["open_box", "used"]', 'conditions = ["opened"]'),
        "restocking_fees[0].conditions[0]: 'opened' is not one of 'new', 'open_box'",
        id="unknown-condition",
    ),
    pytest.param(
        ('"wrong_item", "not_as_described"]', '"wrong_item", "late"]'),
        "shipping_refund_reasons[3]: 'late' is not one of 'changed_mind'",
        id="unknown-reason",
    ),
    pytest.param(
        ("accessories = 30", "accessories = 30\ngift_cards = 0"),
        "windows.categories.gift_cards: gift_cards is in non_returnable_categories",
        id="window-for-non-returnable",
    ),
    pytest.param(
        ('version = "2026-12-07"', ""),
        "version: required key is missing",
        id="missing-key",
    ),
]


@pytest.mark.parametrize(("edit", "expected"), BROKEN)
def test_broken_policy_names_file_and_key(tmp_path: Path, edit: tuple[str, str], expected: str) -> None:
    path = _write(tmp_path, _edited(*edit))
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    assert expected in message, message
    assert isinstance(caught.value, RecoupError)


def test_invalid_toml_gives_the_line(tmp_path: Path) -> None:
    lines = DEFAULT_TEXT.splitlines()
    broken_line = next(i for i, line in enumerate(lines, start=1) if line.startswith("lowest_price_days"))
    path = _write(tmp_path, _edited("lowest_price_days = 90", "lowest_price_days = "))
    with pytest.raises(
        PolicyError, match=rf"^{re.escape(str(path))}: invalid TOML: .*\(at line {broken_line}, column \d+\)"
    ):
        load_policy(path)


def test_misspelt_key_reports_the_typo_first_then_the_missing_key(tmp_path: Path) -> None:
    path = _write(tmp_path, _edited("max_per_customer = 3", "max_per_custmer = 3"))
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert caught.value.problems == [
        "receiptless.max_per_custmer: unknown key (did you mean 'max_per_customer'?)",
        "receiptless.max_per_customer: required key is missing",
    ]
    assert str(caught.value).endswith("(and 1 more problem)")


def test_missing_file_is_a_policy_error(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    with pytest.raises(PolicyError, match=rf"^{re.escape(str(path))}: cannot read the policy file"):
        load_policy(path)


def test_money_may_be_written_as_a_decimal_string() -> None:
    policy = parse_policy(_edited("max_value = 150.00", 'max_value = "99.90"'))
    assert policy.receiptless.max_value == Decimal("99.90")


def test_a_policy_without_fee_rules_charges_none() -> None:
    start = DEFAULT_TEXT.index("[[restocking_fees]]")
    end = DEFAULT_TEXT.index("[loyalty]")
    policy = parse_policy(DEFAULT_TEXT[:start] + DEFAULT_TEXT[end:])
    assert policy.restocking_fees == ()
    assert policy.restocking_fee_rate("electronics", "open_box", "changed_mind") == 0
