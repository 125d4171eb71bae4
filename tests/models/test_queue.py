"""A review queue sized to the team: reviews re-weighted by how they were chosen estimate the fraud rate
of every return, and the queue's cut keeps the returns held for review within the review capacity."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.evaluation import (
    population_rate,
    propensity_weights,
    review_cut,
    score_distribution,
    selection_weights,
)
from models.fraud import challenger_wins
from oms.policy import load_policy
from oms.settings import DEFAULT_POLICY_PATH


def _retailer(seed: int, n: int = 40_000) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """Returns with a true fraud flag; the retailer's own rules flag the high-value ones (which the
    legacy rules reproduce) and, unseen by them, part of the rest; a share of the flagged are reviewed,
    and a random audit samples the unflagged."""
    rng = np.random.default_rng(seed)
    value = rng.lognormal(3.5, 1.0, n)
    hidden = rng.random(n) < 0.03  # flagged by a rule of the retailer's that the legacy rules lack
    fraud = rng.random(n) < np.where(value >= 400, 0.5, np.where(hidden, 0.7, 0.08))
    population = pd.DataFrame(
        {
            "return_id": [f"R{i}" for i in range(n)],
            "receiptless": 0,
            "return_value": value,
            "cust_returns_30d": 0.0,
            "refund_cash": 0,
        }
    )
    flagged = (value >= 400) | hidden
    reviewed_flag = flagged & (rng.random(n) < 0.4)
    audit = ~flagged & (rng.random(n) < 0.01)
    chosen = reviewed_flag | audit
    holdout = population[chosen].assign(
        label=fraud[chosen].astype(int), source=np.where(reviewed_flag[chosen], "rule_flag", "random_audit")
    )
    return holdout.reset_index(drop=True), population, float(fraud.mean())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_reviews_weighted_by_their_channel_estimate_the_fraud_rate_of_every_return(seed: int) -> None:
    holdout, population, truth = _retailer(seed)
    labels = holdout["label"].to_numpy()
    by_channel = np.average(labels, weights=selection_weights(holdout, population))
    by_stratum = np.average(labels, weights=propensity_weights(holdout, population))
    assert abs(by_channel - truth) < 0.2 * truth, (by_channel, truth)
    # weighting each stratum's reviews by its size takes the hidden flags for the audit: far too high
    assert by_stratum > 1.5 * truth
    assert labels.mean() > 2 * truth


def test_without_an_audit_each_stratum_weighs_by_its_size() -> None:
    holdout, population, _ = _retailer(4)
    flags_only = holdout[holdout["source"] == "rule_flag"].reset_index(drop=True)
    assert np.allclose(selection_weights(flags_only, population), propensity_weights(flags_only, population))


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    capacity=st.sampled_from([0.005, 0.02, 0.05, 0.1]),
    review=st.floats(0.05, 0.8),
    gap=st.floats(0.05, 0.5),
    skew=st.floats(0.3, 4.0),
)
def test_the_queue_holds_at_most_the_capacity_and_never_starts_below_the_threshold(
    seed: int, capacity: float, review: float, gap: float, skew: float
) -> None:
    deny = min(review + gap, 0.99)
    scores = np.random.default_rng(seed).beta(skew, 6.0, 20_000)
    cut = review_cut(score_distribution(scores), capacity, review, deny)
    assert cut >= review
    held = ((scores >= cut) & (scores < deny)).mean()
    assert held <= capacity + 0.002
    if cut > review:  # raised: the queue is full, at the capacity
        assert held >= capacity - 0.002
    else:  # the threshold alone fits within the capacity
        assert ((scores >= review) & (scores < deny)).mean() <= capacity + 0.002


def test_without_a_distribution_the_threshold_alone_decides() -> None:
    policy = load_policy(DEFAULT_POLICY_PATH)
    fraud = policy.fraud
    assert (
        review_cut(np.zeros(0), 0.02, fraud.review_threshold, fraud.deny_threshold) == fraud.review_threshold
    )
    review, deny = fraud.review_threshold, fraud.deny_threshold  # 0.2 and 0.9 by default
    assert policy.decision_for_score(review) == "review"
    assert policy.decision_for_score(review, review_from=review + 0.3) == "approve"
    assert policy.decision_for_score(review + 0.35, review_from=review + 0.3) == "review"
    assert policy.decision_for_score(deny, review_from=0.99) == "deny"  # denial is the threshold's
    assert policy.decision_for_score(review, review_from=review / 2) == "review"
    assert policy.decision_for_score(review * 0.9, review_from=review / 2) == "approve"  # never below it


def test_the_gate_refuses_a_challenger_that_would_flood_the_queue() -> None:
    ranking = {
        "model_ipw_ap": 0.8,
        "model_ipw_ap_lo": 0.7,
        "model_ipw_ap_hi": 0.9,
        "rules_ipw_ap": 0.3,
        "rules_ipw_ap_lo": 0.2,
        "rules_ipw_ap_hi": 0.4,
        "model_minus_rules_lo": 0.3,
        "model_minus_rules_hi": 0.6,
    }
    queue = {"queue_share": 0.05, "queue_per_day": 10.0, "capacity_per_day": 4.0}
    wins, _ = challenger_wins({**ranking, **queue, "queue_capacity_ratio": 1.0})
    assert wins
    wins, reason = challenger_wins({**ranking, **queue, "queue_capacity_ratio": 2.5})
    assert not wins and "2.5x the team's capacity" in reason and "10.0 a day" in reason


def test_a_few_audits_without_fraud_do_not_say_the_unflagged_hold_none() -> None:
    holdout, population, truth = _retailer(5)
    audits = holdout.index[holdout["source"] == "random_audit"]
    few = holdout.drop(audits[5:]).reset_index(drop=True)  # five audits left
    few.loc[few["source"] == "random_audit", "label"] = 0
    plain = np.average(few["label"], weights=selection_weights(few, population))
    shrunk = population_rate(few, population)
    assert plain < 0.5 * truth  # the unflagged read as fraud-free
    assert shrunk > plain and shrunk < 1.0
    # with every audit the estimate is about the truth, whatever the prior
    assert abs(population_rate(holdout, population) - truth) < 0.2 * truth


def test_confirmed_fraud_before_is_always_among_the_reasons() -> None:
    from models.explain import reason_codes

    features = ["return_value", "receiptless", "cust_returns_30d", "refund_cash", "cust_prior_fraud"]
    values = np.array([250.0, 1.0, 4.0, 1.0, 2.0])
    contributions = np.array([0.9, 0.8, 0.7, 0.6, 0.05, -2.0])  # the prior fraud ranks last
    reasons = reason_codes(features, values, contributions, {}, top=3)
    assert [r["feature"] for r in reasons] == [*features[:3], "cust_prior_fraud"]
    assert "2 earlier returns of this customer were decided fraud or abuse" in reasons[-1]["text"]
    none_before = reason_codes(features, np.array([250.0, 1.0, 4.0, 1.0, 0.0]), contributions, {}, top=3)
    assert [r["feature"] for r in none_before] == features[:3]
