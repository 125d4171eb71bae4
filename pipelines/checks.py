"""Asset checks, in one place: leakage, null rates, one row per return."""

import dagster as dg
import numpy as np
import pandas as pd
from sqlalchemy import select

from features.catalogue import ORDER_FEATURES, REQUEST, names
from features.offline import recompute_before
from oms.tables import Return
from pipelines.assets.features import return_features
from pipelines.partitions import month_window
from pipelines.resources import DatabaseResource

LEAKAGE_SAMPLE = 8


def _this_partition(
    context: dg.AssetCheckExecutionContext, frame: pd.DataFrame
) -> tuple[pd.DataFrame, str | None]:
    """A check loads every materialised partition; keep the run's month."""
    partition = context.run.tags.get("dagster/partition")
    if partition is None or frame.empty:
        return frame, partition
    start, end = month_window(partition)
    requested = pd.to_datetime(frame["requested_at"], utc=True)
    return frame[(requested >= start) & (requested < end)], partition


# Request-level features are known for every return: any null there is a bug, not missing history.
ALWAYS_PRESENT = [
    n
    for n in names(tuple(REQUEST))
    if n
    not in (
        *ORDER_FEATURES,
        "customer_tenure_days",
        "promo_share",
        "electronics_share",
        "apparel_share",
        *[r for r in names(tuple(REQUEST)) if r.startswith("reason_")],
    )
]


@dg.asset_check(
    asset=return_features, description="No feature uses an event at or after the return's request time."
)
def no_future_inputs(
    context: dg.AssetCheckExecutionContext, database: DatabaseResource, return_features: pd.DataFrame
) -> dg.AssetCheckResult:
    return_features, _ = _this_partition(context, return_features)
    if return_features.empty:
        return dg.AssetCheckResult(passed=True, metadata={"sampled": 0})
    sample = return_features.sample(min(LEAKAGE_SAMPLE, len(return_features)), random_state=0)
    again = recompute_before(database.engine, list(sample["return_id"])).set_index("return_id")
    batch = sample.set_index("return_id")
    leaking = [
        name
        for name in again.columns
        if not np.allclose(
            batch.loc[again.index, name].to_numpy(float),
            again[name].to_numpy(float),
            rtol=1e-9,
            equal_nan=True,
        )
    ]
    return dg.AssetCheckResult(
        passed=not leaking,
        metadata={"sampled": len(sample), "leaking_features": ", ".join(leaking) or "none"},
    )


@dg.asset_check(
    asset=return_features, description="Features known for every return are never null; null rates reported."
)
def null_rates(context: dg.AssetCheckExecutionContext, return_features: pd.DataFrame) -> dg.AssetCheckResult:
    return_features, _ = _this_partition(context, return_features)
    if return_features.empty:
        return dg.AssetCheckResult(passed=True, metadata={"rows": 0})
    rates = return_features.drop(columns=["return_id", "requested_at"]).isna().mean()
    bad = [name for name in ALWAYS_PRESENT if rates.get(name, 0) > 0]
    worst = rates.sort_values(ascending=False).head(5)
    return dg.AssetCheckResult(
        passed=not bad,
        metadata={
            "null_always_present": ", ".join(bad) or "none",
            **{f"null_rate_{k}": float(v) for k, v in worst.items()},
        },
    )


@dg.asset_check(asset=return_features, description="Exactly one row per return requested in the partition.")
def one_row_per_return(
    context: dg.AssetCheckExecutionContext, database: DatabaseResource, return_features: pd.DataFrame
) -> dg.AssetCheckResult:
    return_features, partition = _this_partition(context, return_features)
    duplicated = int(return_features["return_id"].duplicated().sum()) if len(return_features) else 0
    expected = None
    if partition:
        start, end = month_window(partition)
        with database.engine.connect() as connection:
            expected = len(
                connection.execute(
                    select(Return.return_id).where(
                        Return.requested_at >= start.to_pydatetime(),
                        Return.requested_at < end.to_pydatetime(),
                    )
                ).all()
            )
    passed = duplicated == 0 and (expected is None or expected == len(return_features))
    return dg.AssetCheckResult(
        passed=passed,
        metadata={
            "rows": len(return_features),
            "expected": expected if expected is not None else -1,
            "duplicates": duplicated,
        },
    )
