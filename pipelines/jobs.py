"""Jobs, schedules and sensors: daily features and analytics, weekly retraining, retraining after new
reviews."""

import os

import dagster as dg
from dagster_celery import celery_executor
from sqlalchemy import func, select

from oms.tables import FraudReview
from pipelines.partitions import monthly
from pipelines.resources import DatabaseResource

features_job = dg.define_asset_job(
    "features_job",
    selection=dg.AssetSelection.groups("features"),
    partitions_def=monthly,
    description="Return and line features for one month, and the product snapshots.",
)
# The same job with its steps on Celery workers (production profile: broker RabbitMQ or Redis, run and
# event storage on PostgreSQL so that workers and the run coordinator share it). Broker and backend come
# from run config (execution.config.broker), default pyamqp://guest@localhost:5672//.
features_celery_job = dg.define_asset_job(
    "features_celery_job",
    selection=dg.AssetSelection.groups("features"),
    partitions_def=monthly,
    executor_def=celery_executor,
    description="features_job on Celery workers.",
)
analytics_job = dg.define_asset_job(
    "analytics_job",
    selection=dg.AssetSelection.groups("analytics"),
    description="Merchandising and operations analytics.",
)
models_job = dg.define_asset_job(
    "models_job",
    selection=dg.AssetSelection.groups("models"),
    description="Training set, challengers (MLflow), gated promotion to champion, batch scores.",
)

daily_features = dg.build_schedule_from_partitioned_job(features_job, hour_of_day=2, name="daily_features")
daily_analytics = dg.ScheduleDefinition(name="daily_analytics", job=analytics_job, cron_schedule="30 3 * * *")
weekly_retraining = dg.ScheduleDefinition(name="weekly_retraining", job=models_job, cron_schedule="0 4 * * 1")


@dg.sensor(
    job=models_job,
    minimum_interval_seconds=3600,
    description="Retrain once enough new loss-prevention reviews arrived.",
)
def new_reviews_sensor(context: dg.SensorEvaluationContext, database: DatabaseResource):
    threshold = int(os.environ.get("RECOUP_RETRAIN_AFTER_REVIEWS", "500"))
    with database.engine.connect() as connection:
        reviews = connection.execute(select(func.count()).select_from(FraudReview)).scalar_one()
    seen = int(context.cursor or 0)
    if reviews - seen >= threshold:
        context.update_cursor(str(reviews))
        return dg.RunRequest(run_key=f"reviews-{reviews}", tags={"reason": f"{reviews - seen} new reviews"})
    return dg.SkipReason(f"{reviews - seen} new reviews since the last retraining (threshold {threshold})")


JOBS = [features_job, features_celery_job, analytics_job, models_job]
SCHEDULES = [daily_features, daily_analytics, weekly_retraining]
SENSORS = [new_reviews_sensor]
