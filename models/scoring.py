"""Batch scores: every return scored with the champion, or the rules scorer while there is none
(point-in-time features), band, decision and reasons, written to `return_scores` for the dashboards and
the review queue."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
from sqlalchemy import Engine, delete

from models.explain import reason_codes
from models.fraud import FraudModel, band
from models.registry import FRAUD_MODEL
from oms.policy import Policy
from oms.tables import ReturnScore


def score_frame(
    model: FraudModel, features: pd.DataFrame, policy: Policy, *, reasons: int = 3
) -> pd.DataFrame:
    """One row per return: score (calibrated), band, decision by the policy thresholds, and the top
    reasons that raise its risk (the review queue ranks every return, so each keeps them). `model` is a
    `FraudModel` or the rules scorer (`models.rules.RulesScorer`)."""
    matrix = model.matrix(features)
    raw = model.raw(matrix)
    scores = model.calibrate(raw)
    contributions = model.contributions(matrix)
    review, deny = policy.fraud.review_threshold, policy.fraud.deny_threshold
    review_from = model.review_from(policy.fraud)
    rows = []
    for index, return_id in enumerate(features["return_id"].to_numpy()):
        score = float(scores[index])
        rows.append(
            {
                "return_id": return_id,
                "score": score,
                "band": band(score, review, deny),
                "decision": policy.decision_for_score(score, review_from),
                "reasons": reason_codes(
                    model.features,
                    matrix[index],
                    contributions[index],
                    model.typical,
                    top=reasons,
                    by_group=getattr(model, "typical_by_group", None),
                ),
            }
        )
    return pd.DataFrame(rows)


def write_scores(
    engine: Engine, model: FraudModel, scored: pd.DataFrame, *, model_name: str = FRAUD_MODEL
) -> int:
    """Replace this model version's scores with `scored` (one transaction)."""
    now = dt.datetime.now(dt.UTC)
    version = model.version or "unregistered"
    records = [
        {
            "return_id": row.return_id,
            "model_name": model_name,
            "model_version": version,
            "scored_at": now,
            "score": float(row.score),
            "band": row.band,
            "decision": row.decision,
            "reasons": [
                {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in reason.items()}
                for reason in row.reasons
            ],
        }
        for row in scored.itertuples()
    ]
    with engine.begin() as connection:
        connection.execute(
            delete(ReturnScore).where(
                ReturnScore.model_name == model_name, ReturnScore.model_version == version
            )
        )
        for start in range(0, len(records), 5_000):
            connection.execute(ReturnScore.__table__.insert(), records[start : start + 5_000])
        connection.exec_driver_sql("ANALYZE return_scores")  # the review queue's plans need fresh statistics
    return len(records)
