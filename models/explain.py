"""Reason codes: the largest contributions to a score (LightGBM `pred_contrib`) in plain sentences,
with the return's value and what is typical ("7 returns in the last 30 days; most customers have 0")."""

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


# Sentences for the features analysts meet most; everything else gets the generic form.
TEMPLATES: dict[str, Callable[[float, float], str]] = {
    "receiptless": lambda v, t: "Returned without a receipt" if v else "Returned with a receipt",
    "cross_channel": lambda v, t: (
        "Bought online, returned in a store" if v else "Returned through the channel it was bought in"
    ),
    "refund_cash": lambda v, t: "Refund asked in cash" if v else "Refund not in cash",
    "cust_returns_30d": lambda v, t: f"{v:,.0f} returns in the last 30 days; most customers have {t:,.0f}",
    "cust_returns_90d": lambda v, t: f"{v:,.0f} returns in the last 90 days; most customers have {t:,.0f}",
    "cust_returns_365d": lambda v, t: f"{v:,.0f} returns in the last year; most customers have {t:,.0f}",
    "cust_return_rate_value_365d": lambda v, t: (
        f"Returned {v:.0%} of what they bought in the last year (typical {t:.0%})"
    ),
    "cust_return_rate_units_365d": lambda v, t: (
        f"Returned {v:.0%} of the units they bought in the last year (typical {t:.0%})"
    ),
    "cust_linked_accounts": lambda v, t: (
        f"Shares a card, device or delivery address with {v:,.0f} other accounts (typical {t:,.0f})"
    ),
    "cust_linked_fraud": lambda v, t: f"{v:,.0f} linked accounts were found committing fraud or abuse",
    "cust_prior_fraud": lambda v, t: f"{v:,.0f} earlier returns of this customer were decided fraud or abuse",
    "cust_return_locations_30d": lambda v, t: (
        f"Returned at {v:,.0f} different locations in 30 days (typical {t:,.0f})"
    ),
    "cust_receiptless_returns_365d": lambda v, t: (
        f"{v:,.0f} receiptless returns in the last year (typical {t:,.0f})"
    ),
    "days_left_in_window": lambda v, t: (
        f"Returned {v:,.1f} days before the return window closes (typical {t:,.1f})"
    ),
    "days_since_purchase": lambda v, t: f"Returned {v:,.1f} days after purchase (typical {t:,.1f})",
    "return_value": lambda v, t: f"Return worth {v:,.2f} (typical {t:,.2f})",
    "emp_cash_share_30d": lambda v, t: (
        f"The employee refunded {v:.0%} of returns in cash in 30 days (typical {t:.0%})"
    ),
    "emp_receiptless_share_30d": lambda v, t: (
        f"{v:.0%} of the employee's returns in 30 days had no receipt (typical {t:.0%})"
    ),
    "emp_returns_30d": lambda v, t: f"The employee processed {v:,.0f} returns in 30 days (typical {t:,.0f})",
    "customer_tenure_days": lambda v, t: f"Account {v:,.0f} days old (typical {t:,.0f})",
    "electronics_share": lambda v, t: f"{v:.0%} of the value is electronics (typical {t:.0%})",
    "store_receiptless_share_30d": lambda v, t: (
        f"{v:.0%} of this store's returns in 30 days had no receipt (typical {t:.0%})"
    ),
}


def _missing(name: str) -> str:
    """Why a feature has no value, said the way an analyst would."""
    if name in ORDER_FEATURES:
        return "No order to check it against (a receiptless return)"
    if name.startswith("cust_") or name == "customer_tenure_days":
        return "No customer history to go on (guest or new account)"
    if name.startswith("emp_"):
        return "No employee recorded on the return"
    if name.startswith("store_"):
        return "No store recorded on the return"
    return f"{DESCRIPTIONS.get(name, name).capitalize()}: unknown"


def sentence(name: str, value: float, typical: float) -> str:
    if math.isnan(value):
        return _missing(name)
    typical = 0.0 if typical is None or math.isnan(typical) else typical
    if name in TEMPLATES:
        return TEMPLATES[name](value, typical)
    show = _kind(name)
    return f"{DESCRIPTIONS.get(name, name).capitalize()}: {show(value)} (typical {show(typical)})"


def reason_codes(
    features: list[str],
    values: np.ndarray,
    contributions: np.ndarray,
    typical: dict[str, float],
    top: int = 3,
) -> list[dict[str, object]]:
    """The `top` features pushing the score up the most, as {feature, value, typical, contribution, text}.

    `contributions` is one row of `pred_contrib` (last element the base value); contributions plus the
    base value are the raw score, so the reasons are an exact decomposition, not a post-hoc story.
    """
    parts = contributions[: len(features)]
    order = np.argsort(-parts)
    reasons = []
    for index in order[:top]:
        if parts[index] <= 0:
            break
        name = features[index]
        value = float(values[index])
        reasons.append(
            {
                "feature": name,
                "value": None if math.isnan(value) else value,
                "typical": typical.get(name),
                "contribution": float(parts[index]),
                "text": sentence(name, value, typical.get(name, float("nan"))),
            }
        )
    return reasons
