"""The Dagster code location: `dagster dev -m pipelines.definitions`."""

import dagster as dg

from pipelines import checks, jobs
from pipelines.assets import features, models
from pipelines.resources import DatabaseResource, MlflowResource, ParquetIOManager

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([features, models]),
    asset_checks=[*dg.load_asset_checks_from_modules([checks]), *dg.load_asset_checks_from_modules([models])],
    jobs=jobs.JOBS,
    schedules=jobs.SCHEDULES,
    sensors=jobs.SENSORS,
    resources={"database": DatabaseResource(), "mlflow": MlflowResource(), "frames": ParquetIOManager()},
)


def features_job():
    """The features job, resolved (for `build_reconstructable_job`: runs in other processes)."""
    return defs.resolve_job_def("features_job")


def features_celery_job():
    """The Celery variant, resolved (workers reconstruct it from this function)."""
    return defs.resolve_job_def("features_celery_job")
