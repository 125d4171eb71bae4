"""The returns policy: load and validate the versioned TOML file, and answer the lifecycle's questions.

Every rule the lifecycle applies to a new request (windows, fees, tender priority, thresholds, limits)
comes from here, never from code. A broken file is refused as a whole with one `PolicyError` naming the
file, the key path (`restocking_fees[0].percent`, 0-based) and what is wrong.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Mapping
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from oms import enums
from oms.errors import RecoupError
from oms.types import CENT

Decision = Literal["approve", "review", "deny"]
MONEY_LIMIT = Decimal(10) ** 10  # NUMERIC(12,2) in the state tables


class PolicyError(RecoupError):
    """The policy file cannot be used; `problems` lists every 'key.path: what is wrong'."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        rest = len(problems) - 1
        more = f" (and {rest} more problem{'s' * (rest > 1)})" if rest else ""
        super().__init__(f"{source}: {problems[0]}{more}")


# --- field types -------------------------------------------------------------------------------------


def _show(value: Any) -> str:
    """A value as it would be written in TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal | int | float):
        return str(value)
    if isinstance(value, dict):
        return "a table"
    return repr(value)


def _money(value: Any) -> Decimal:
    if isinstance(value, bool | float):
        raise ValueError(f"must be an amount of money such as 150.00, got {_show(value)}")
    try:
        amount = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)
    except (ArithmeticError, TypeError, ValueError):
        raise ValueError(f"must be an amount of money such as 150.00, got {_show(value)}") from None
    if not amount.is_finite() or abs(amount) >= MONEY_LIMIT:
        raise ValueError(f"must be a finite amount of money below {MONEY_LIMIT}, got {_show(value)}")
    if amount != amount.quantize(CENT):
        raise ValueError(f"money has at most 2 decimal places, got {value}")
    if amount < 0:
        raise ValueError(f"must not be negative, got {value}")
    return amount.quantize(CENT)


def _fraction(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ValueError(f"must be a number between 0 and 1, got {_show(value)}")
    number = float(value)
    if not 0 <= number <= 1:
        raise ValueError(f"must be between 0 and 1, got {value}")
    return number


def _percent(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise ValueError(f"must be a number between 0 and 100, got {_show(value)}")
    number = Decimal(value)
    if not number.is_finite() or not 0 <= number <= 100:
        raise ValueError(f"must be between 0 and 100, got {value}")
    return number


def _rate(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise ValueError(f"must be a number, got {_show(value)}")
    number = Decimal(value)
    if not number.is_finite() or number < 0:
        raise ValueError(f"must be a number >= 0, got {value}")
    return number


Money = Annotated[Decimal, BeforeValidator(_money)]
Fraction = Annotated[float, BeforeValidator(_fraction)]
Percent = Annotated[Decimal, BeforeValidator(_percent)]
Rate = Annotated[Decimal, BeforeValidator(_rate)]
Days = Annotated[int, Field(strict=True, ge=0)]
Count = Annotated[int, Field(strict=True, ge=0)]
Category = Annotated[str, Field(min_length=1)]
PaymentMethod = Literal["card", "gift_card", "store_credit", "cash", "loyalty_points", "paypal", "other"]
Reason = Literal[
    "changed_mind",
    "doesnt_fit",
    "defective",
    "damaged_in_transit",
    "not_as_described",
    "wrong_item",
    "arrived_late",
    "other",
]
Condition = Literal["new", "open_box", "used", "damaged", "defective", "wrong_item", "empty_box"]
ReturnChannel = Literal["store", "web", "app", "mail"]  # these Literals spell out oms.enums (a test checks)


def _no_duplicates(values: tuple[str, ...]) -> tuple[str, ...]:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{value!r} is listed twice")
        seen.add(value)
    return values


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- sections ----------------------------------------------------------------------------------------


class Windows(_Section):
    default_days: Days = 30
    categories: dict[Category, Days] = Field(default_factory=dict)


class Receiptless(_Section):
    allowed_channels: tuple[ReturnChannel, ...] = ("store",)
    lowest_price_days: Days = 90
    max_value: Money
    max_per_customer: Count
    per_customer_days: Days = 30

    @field_validator("allowed_channels")
    @classmethod
    def _unique_channels(cls, channels: tuple[str, ...]) -> tuple[str, ...]:
        return _no_duplicates(channels)


class RestockingFeeRule(_Section):
    """A fee rule; an empty list (or an omitted key) matches anything."""

    categories: tuple[Category, ...] = ()
    conditions: tuple[Condition, ...] = ()
    reasons: tuple[Reason, ...] = ()
    percent: Percent
    minimum: Money = Decimal("0.00")
    maximum: Money | None = None

    @field_validator("maximum")
    @classmethod
    def _maximum_not_below_minimum(cls, maximum: Decimal | None, info: ValidationInfo) -> Decimal | None:
        minimum = info.data.get("minimum")
        if maximum is not None and minimum is not None and maximum < minimum:
            raise ValueError(f"must not be below minimum ({minimum}), got {maximum}")
        return maximum

    def matches(self, category: str | None, condition: str | None, reason: str) -> bool:
        return (
            (not self.categories or category in self.categories)
            and (not self.conditions or condition in self.conditions)
            and (not self.reasons or reason in self.reasons)
        )

    @property
    def rate(self) -> Decimal:
        return self.percent / 100


class Loyalty(_Section):
    points_per_currency_unit: Rate = Decimal(1)
    claw_back_on_refund: StrictBool = True


class Fraud(_Section):
    review_threshold: Fraction
    deny_threshold: Fraction
    review_capacity: Fraction = 0.02

    @field_validator("deny_threshold")
    @classmethod
    def _deny_above_review(cls, deny: float, info: ValidationInfo) -> float:
        review = info.data.get("review_threshold")
        if review is not None and deny <= review:
            raise ValueError(f"must be above review_threshold ({review}), got {deny}")
        return deny


class Exchanges(_Section):
    require_stock: StrictBool = True


class Velocity(_Section):
    window_days: Days = 30
    max_returns: Count
    max_refund_value: Money


class Policy(_Section):
    """The whole returns policy; see `oms/policy.toml` for what each key means."""

    version: Annotated[str, Field(min_length=1)]
    non_returnable_categories: tuple[Category, ...] = ()
    tender_priority: tuple[PaymentMethod, ...]
    shipping_refund_reasons: tuple[Reason, ...]
    windows: Windows = Field(default_factory=Windows)
    receiptless: Receiptless
    restocking_fees: tuple[RestockingFeeRule, ...] = ()
    loyalty: Loyalty = Field(default_factory=Loyalty)
    fraud: Fraud
    velocity: Velocity
    exchanges: Exchanges = Field(default_factory=Exchanges)

    @field_validator("non_returnable_categories", "shipping_refund_reasons")
    @classmethod
    def _unique_entries(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return _no_duplicates(values)

    @field_validator("tender_priority")
    @classmethod
    def _every_method_once(cls, priority: tuple[str, ...]) -> tuple[str, ...]:
        _no_duplicates(priority)
        missing = [m for m in enums.PAYMENT_METHODS if m not in priority]
        if missing:
            raise ValueError(f"must list every payment method once; missing {', '.join(missing)}")
        return priority

    # --- what the lifecycle asks ---------------------------------------------------------------------

    def is_returnable(self, category: str | None) -> bool:
        return category not in self.non_returnable_categories

    def window_days(self, category: str | None) -> int:
        """Days after purchase a receipted return is accepted; 0 for non-returnable categories."""
        if not self.is_returnable(category):
            return 0
        if category is None:
            return self.windows.default_days
        return self.windows.categories.get(category, self.windows.default_days)

    def restocking_fee_rule(
        self, category: str | None, condition: str | None, reason: str
    ) -> RestockingFeeRule | None:
        """The first fee rule matching the returned line, or None (no fee)."""
        return next((r for r in self.restocking_fees if r.matches(category, condition, reason)), None)

    def restocking_fee_rate(self, category: str | None, condition: str | None, reason: str) -> Decimal:
        """The fee as a fraction of the merchandise refund (Decimal('0.15') for 15 %), 0 when none applies."""
        rule = self.restocking_fee_rule(category, condition, reason)
        return rule.rate if rule is not None else Decimal(0)

    def refunds_shipping(self, reason: str) -> bool:
        """Whether the retailer is at fault for this reason, so shipping is refunded."""
        return reason in self.shipping_refund_reasons

    def tender_rank(self, method: str) -> int:
        """0 for the tender refunded first."""
        try:
            return self.tender_priority.index(method)  # type: ignore[arg-type]
        except ValueError:
            raise ValueError(f"unknown payment method {method!r}") from None

    def receiptless_allowed(self, channel: str) -> bool:
        return channel in self.receiptless.allowed_channels

    def loyalty_points(self, merchandise: Decimal) -> int:
        """Points earned on an amount of merchandise paid; fractions of a point are dropped."""
        points = (merchandise * self.loyalty.points_per_currency_unit).to_integral_value(ROUND_FLOOR)
        return max(int(points), 0)

    def decision_for_score(self, score: float, review_from: float | None = None) -> Decision:
        """What the fraud score alone says: deny at or above deny, review at or above review (or at or
        above `review_from`, the scorer's cut that keeps the queue within the review capacity)."""
        if score >= self.fraud.deny_threshold:
            return "deny"
        if score >= max(self.fraud.review_threshold, review_from or 0.0):
            return "review"
        return "approve"

    def velocity_exceeded(self, returns_in_window: int, refunded_in_window: Decimal) -> bool:
        """Whether a customer's returns in the velocity window (this request included) need review."""
        return (
            returns_in_window > self.velocity.max_returns
            or refunded_in_window > self.velocity.max_refund_value
        )


# --- loading -----------------------------------------------------------------------------------------


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file; raises `PolicyError` naming the file and the key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(
            str(path), [f"cannot read the policy file ({exc.__class__.__name__}: {exc})"]
        ) from exc
    return parse_policy(text, source=str(path))


def parse_policy(text: str, source: str = "policy.toml") -> Policy:
    """Validate policy TOML text; `source` names it in errors."""
    try:
        # Floats as Decimal: 150.10 stays exactly 150.10, so money keeps its cents and 3 places show.
        data = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(source, [f"invalid TOML: {exc}"]) from exc
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        # Unknown keys first: a misspelt key also shows up as the real key missing.
        errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        raise PolicyError(source, [_describe(error) for error in errors]) from exc
    problems = [
        f"windows.categories.{category}: {category} is in non_returnable_categories, so it has no window"
        for category in policy.windows.categories
        if not policy.is_returnable(category)
    ]
    if problems:
        raise PolicyError(source, problems)
    return policy


def _key_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "(top level)"


def _describe(error: Mapping[str, Any]) -> str:
    loc = tuple(error["loc"])
    kind = error["type"]
    value = _show(error.get("input"))
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        message = "unknown key"
        allowed = _keys_at(loc[:-1])
        if allowed:
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            message += f" (did you mean {close[0]!r}?)" if close else f" (allowed: {', '.join(allowed)})"
    elif kind == "missing":
        message = "required key is missing"
    elif kind == "value_error":
        message = str(ctx.get("error", error["msg"]))
    elif kind == "literal_error":
        message = f"{value} is not one of {ctx.get('expected', '')}"
    elif kind in ("int_type", "int_parsing", "int_from_float"):
        message = f"must be a whole number, got {value}"
    elif kind in ("greater_than_equal", "greater_than"):
        message = f"must be >= {ctx.get('ge', ctx.get('gt'))}, got {value}"
    elif kind in ("bool_type", "bool_parsing"):
        message = f"must be true or false, got {value}"
    elif kind in ("string_type", "string_too_short"):
        message = f"must be a non-empty string, got {value}"
    elif kind in ("tuple_type", "list_type"):
        message = f"must be a list, got {value}"
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        message = f"must be a table, got {value}"
    else:
        message = f"{error['msg']} (got {value})"
    return f"{_key_path(loc)}: {message}"


def _keys_at(loc: tuple[int | str, ...]) -> list[str]:
    """The keys the model accepts at `loc`, for suggestions; [] when `loc` is not a table of known keys."""
    model: Any = Policy
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return []
        model = model.model_fields[part].annotation
        while get_origin(model) is tuple:  # a list of tables: the item type
            model = get_args(model)[0]
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []
