"""Reason codes: the largest contributions to a score (LightGBM `pred_contrib`) in plain sentences that
say which way they push, with the return's value and what is typical of comparable returns ("Raises the
risk: 7 returns by the customer in the last 30 days (typical of store returns of apparel: 0)")."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from features.catalogue import FRAUD_FEATURES_V1, ORDER_FEATURES

DESCRIPTIONS = {f.name: f.description for f in FRAUD_FEATURES_V1}


def _count(v: float) -> str:
    return f"{v:,.0f}"


def _money(v: float) -> str:
    return f"{v:,.2f}"


def _percent(v: float) -> str:
    return f"{v:.0%}"


def _days(v: float) -> str:
    return f"{v:,.1f} days"


def _kind(name: str) -> Callable[[float], str]:
    if name.endswith(("_share", "_rate", "_share_30d", "_rate_30d", "_365d")) and (
        "share" in name or "rate" in name
    ):
        return _percent
    if "value" in name or "spend" in name or "price" in name:
        return _money
    if "days" in name:
        return _days
    return _count


# Phrases for the features analysts meet most (the value only); everything else gets the generic form.
TEMPLATES: dict[str, Callable[[float], str]] = {
    "receiptless": lambda v: "returned without a receipt" if v else "returned with a receipt",
    "cross_channel": lambda v: (
        "bought online, returned in a store" if v else "returned through the channel it was bought in"
    ),
    "refund_cash": lambda v: "refund asked in cash" if v else "refund not asked in cash",
    "cust_returns_30d": lambda v: f"{v:,.0f} returns by the customer in the last 30 days",
    "cust_returns_90d": lambda v: f"{v:,.0f} returns by the customer in the last 90 days",
    "cust_returns_365d": lambda v: f"{v:,.0f} returns by the customer in the last year",
    "cust_return_rate_value_365d": lambda v: f"returned {v:.0%} of what they bought in the last year",
    "cust_return_rate_units_365d": lambda v: f"returned {v:.0%} of the units they bought in the last year",
    "cust_linked_accounts": lambda v: (
        f"shares a card, device or delivery address with {v:,.0f} other accounts"
    ),
    "cust_linked_fraud": lambda v: f"{v:,.0f} linked accounts were found committing fraud or abuse",
    "cust_prior_fraud": lambda v: f"{v:,.0f} earlier returns of this customer were decided fraud or abuse",
    "cust_return_locations_30d": lambda v: f"returned at {v:,.0f} different locations in 30 days",
    "cust_receiptless_returns_365d": lambda v: f"{v:,.0f} receiptless returns in the last year",
    "days_left_in_window": lambda v: f"returned {v:,.1f} days before the return window closes",
    "days_since_purchase": lambda v: f"returned {v:,.1f} days after purchase",
    "return_value": lambda v: f"a return worth {v:,.2f}",
    "emp_cash_share_30d": lambda v: f"the employee refunded {v:.0%} of returns in cash in 30 days",
    "emp_receiptless_share_30d": lambda v: f"{v:.0%} of the employee's returns in 30 days had no receipt",
    "emp_returns_30d": lambda v: f"the employee processed {v:,.0f} returns in 30 days",
    "customer_tenure_days": lambda v: f"an account {v:,.0f} days old",
    "electronics_share": lambda v: f"{v:.0%} of the value is electronics",
    "store_receiptless_share_30d": lambda v: f"{v:.0%} of this store's returns in 30 days had no receipt",
}
# yes/no facts and counts of confirmed fraud: a typical value says nothing there
NO_TYPICAL = {
    "receiptless",
    "cross_channel",
    "refund_cash",
    "refund_store_credit",
    "refund_exchange",
    "return_channel_store",
    "return_channel_mail",
    "return_channel_online",
    "has_employee",
    "order_online",
    "customer_known",
    "cust_linked_fraud",
    "cust_prior_fraud",
}
UP, DOWN = "raises the risk", "lowers the risk"


def _missing(name: str) -> str:
    """Why a feature has no value, said the way an analyst would."""
    if name in ORDER_FEATURES:
        return "no order to check it against (a receiptless return)"
    if name.startswith("cust_") or name == "customer_tenure_days":
        return "no customer history to go on (guest or new account)"
    if name.startswith("emp_"):
        return "no employee recorded on the return"
    if name.startswith("store_"):
        return "no store recorded on the return"
    return f"{DESCRIPTIONS.get(name, name)}: unknown"


def sentence(
    name: str, value: float, typical: float | None, *, direction: str = UP, comparable: str = "returns"
) -> str:
    """'Raises the risk: 7 returns by the customer in the last 30 days (typical of store returns of
    apparel: 0)'. The typical value is the median of comparable returns (same channel and category)."""
    if math.isnan(value):
        phrase = _missing(name)
    elif name in TEMPLATES:
        phrase = TEMPLATES[name](value)
    else:
        phrase = f"{DESCRIPTIONS.get(name, name)}: {_kind(name)(value)}"
    if not math.isnan(value) and name not in NO_TYPICAL and typical is not None and not math.isnan(typical):
        phrase += f" (typical of {comparable}: {_kind(name)(typical)})"
    return f"{direction.capitalize()}: {phrase}"


# --- comparable returns: the same channel and the same kind of goods -----------------------------------

CHANNELS = {"return_channel_store": "store", "return_channel_mail": "mail", "return_channel_online": "online"}
KINDS = {"electronics_share": "electronics", "apparel_share": "apparel"}


def group_of(values: dict[str, float]) -> tuple[str, str]:
    """The comparable group of a return: (channel, kind of goods): 'store', 'apparel'; '' if unknown."""
    channel = next((label for name, label in CHANNELS.items() if values.get(name) == 1), "")
    kind = next((label for name, label in KINDS.items() if (values.get(name) or 0) >= 0.5), "other goods")
    return channel, kind


def describe_group(channel: str, kind: str) -> str:
    return f"{channel} returns of {kind}" if channel else f"returns of {kind}"


def typical_by_group(features, names: list[str], minimum: int = 50) -> dict[str, dict[str, float]]:
    """The median of each feature per comparable group ('store|apparel'), for groups of at least
    `minimum` returns; the key '' holds every return's median."""
    import pandas as pd

    frame = features[[*names, *[n for n in (*CHANNELS, *KINDS) if n not in names]]]
    channel = pd.Series("", index=frame.index, dtype=object)
    for name, label in CHANNELS.items():
        channel = channel.mask(frame[name] == 1, label)
    kind = pd.Series("other goods", index=frame.index, dtype=object)
    for name, label in reversed(KINDS.items()):
        kind = kind.mask(frame[name].fillna(0) >= 0.5, label)
    out = {"": _medians(frame[names])}
    for (c, k), group in frame[names].groupby([channel.to_numpy(), kind.to_numpy()]):
        if len(group) >= minimum:
            out[f"{c}|{k}"] = _medians(group)
    return out


def _medians(frame) -> dict[str, float | None]:
    return {k: (None if v != v else float(v)) for k, v in frame.median(numeric_only=True).items()}


# a raising reason whenever it is non-zero: an analyst must see confirmed fraud in the customer's past
ALWAYS_SAID = ("cust_prior_fraud", "cust_linked_fraud")


def reason_codes(
    features: list[str],
    values: np.ndarray,
    contributions: np.ndarray,
    typical: dict[str, float],
    top: int = 3,
    *,
    direction: str = UP,
    by_group: dict[str, dict[str, float]] | None = None,
) -> list[dict[str, object]]:
    """The `top` features pushing the score up the most (or down, `direction=DOWN`), as {feature, value,
    typical, contribution, direction, text}.

    `contributions` is one row of `pred_contrib` (last element the base value); contributions plus the
    base value are the raw score, so the reasons are an exact decomposition, not a post-hoc story. The
    typical value is that of comparable returns (`by_group`, same channel and kind of goods) when the
    model has it, else of every return.
    """
    parts = contributions[: len(features)]
    sign = 1.0 if direction == UP else -1.0
    order = np.argsort(-sign * parts, kind="stable")
    row = dict(zip(features, (float(v) for v in values), strict=True))
    channel, kind = group_of(row)
    found = (by_group or {}).get(f"{channel}|{kind}")
    comparable = describe_group(channel, kind) if found else "all returns"
    medians = found or typical
    chosen = [index for index in order[:top] if sign * parts[index] > 0]
    if direction == UP:  # confirmed fraud before is always said, wherever it ranks
        chosen += [
            features.index(name)
            for name in ALWAYS_SAID
            if name in row
            and row[name] > 0
            and parts[features.index(name)] > 0
            and features.index(name) not in chosen
        ]
    reasons = []
    for index in chosen:
        name = features[index]
        value = float(values[index])
        usual = medians.get(name)
        usual = None if usual is None or (isinstance(usual, float) and math.isnan(usual)) else usual
        reasons.append(
            {
                "feature": name,
                "value": None if math.isnan(value) else value,
                "typical": usual,
                "contribution": float(parts[index]),
                "direction": "up" if direction == UP else "down",
                "text": sentence(name, value, usual, direction=direction, comparable=comparable),
            }
        )
    return reasons
