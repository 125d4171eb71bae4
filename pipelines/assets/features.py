"""Feature assets: source tables, product snapshots, monthly return and return-line features."""

import dagster as dg
import pandas as pd
from sqlalchemy import func, select

from features.catalogue import FRAUD_FEATURE_SET, LINE_FEATURE_SET
from features.offline import fraud_features, line_features, write_product_snapshots
from oms.tables import metadata
from pipelines.partitions import month_window, monthly
from pipelines.resources import DatabaseResource

SOURCE_TABLES = (
    "customers",
    "locations",
    "products",
    "orders",
    "order_lines",
    "payments",
    "returns",
    "return_lines",
    "fraud_reviews",
)


@dg.asset(
    group_name="sources", description="The core state tables (loaded by `recoup import` and the lifecycle)."
)
def source_tables(database: DatabaseResource) -> dg.MaterializeResult:
    """Row counts of the state tables the pipelines read."""
    with database.engine.connect() as connection:
        counts = {
            name: connection.execute(select(func.count()).select_from(metadata.tables[name])).scalar_one()
            for name in SOURCE_TABLES
        }
    return dg.MaterializeResult(
        metadata={name: dg.MetadataValue.int(count) for name, count in counts.items()}
    )


@dg.asset(group_name="features", deps=[source_tables])
def product_stats(database: DatabaseResource) -> dg.MaterializeResult:
    """Daily snapshots of units sold and returned per sku, style and category (read by online serving)."""
    rows = write_product_snapshots(database.engine)
    return dg.MaterializeResult(metadata={"rows": rows})


def _returns_in(database: DatabaseResource, start: pd.Timestamp, end: pd.Timestamp) -> int:
    table = metadata.tables["returns"]
    with database.engine.connect() as connection:
        return connection.execute(
            select(func.count())
            .select_from(table)
            .where(table.c.requested_at >= start.to_pydatetime(), table.c.requested_at < end.to_pydatetime())
        ).scalar_one()


@dg.asset(
    group_name="features",
    partitions_def=monthly,
    io_manager_key="frames",
    deps=[source_tables],
    metadata={"feature_set": FRAUD_FEATURE_SET},
)
def return_features(context: dg.AssetExecutionContext, database: DatabaseResource) -> pd.DataFrame:
    """Fraud features of every return requested in the month, as of its own request time."""
    start, end = month_window(context.partition_key)
    if _returns_in(database, start, end) == 0:
        return fraud_features(database.engine, start=start, end=start).iloc[0:0]
    return fraud_features(database.engine, start=start, end=end)


@dg.asset(
    group_name="features",
    partitions_def=monthly,
    io_manager_key="frames",
    deps=[source_tables],
    metadata={"feature_set": LINE_FEATURE_SET},
)
def return_line_features(context: dg.AssetExecutionContext, database: DatabaseResource) -> pd.DataFrame:
    """Recovery-model features of every returned line of the month, with its realised outcome."""
    start, end = month_window(context.partition_key)
    if _returns_in(database, start, end) == 0:
        return line_features(database.engine, start=start, end=start).iloc[0:0]
    return line_features(database.engine, start=start, end=end)
