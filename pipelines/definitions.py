"""The Dagster code location: `dagster dev -m pipelines.definitions`."""

import dagster as dg

from pipelines import checks, jobs
from pipelines.assets import features
from pipelines.resources import DatabaseResource, ParquetIOManager

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([features]),
    asset_checks=dg.load_asset_checks_from_modules([checks]),
    jobs=jobs.JOBS,
    schedules=jobs.SCHEDULES,
    resources={"database": DatabaseResource(), "frames": ParquetIOManager()},
)


def features_job():
    """The features job, resolved (for `build_reconstructable_job`: runs in other processes)."""
    return defs.resolve_job_def("features_job")
