"""Jobs and schedules: daily features (and analytics), weekly retraining."""

from __future__ import annotations

import dagster as dg

from pipelines.partitions import monthly

features_job = dg.define_asset_job(
    "features_job",
    selection=dg.AssetSelection.groups("features"),
    partitions_def=monthly,
    description="Return and line features for one month, and the product snapshots.",
)

daily_features = dg.build_schedule_from_partitioned_job(features_job, hour_of_day=2, name="daily_features")

JOBS = [features_job]
SCHEDULES = [daily_features]
