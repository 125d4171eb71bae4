"""`recoup demo`: the main job end to end on the embedded defaults (what `make demo` runs)."""

from __future__ import annotations

import time

from rich.console import Console
from rich.table import Table
from sqlalchemy import Connection, func, select

from oms.db import make_engine
from oms.importer import import_directory
from oms.migrate import upgrade
from oms.tables import OrderLine, Return, ReturnLine, metadata
from recoup.settings import get_settings
from simulator.sample import write_sample


def run_demo(console: Console, serve: bool = True) -> None:
    settings = get_settings()
    started = time.perf_counter()
    data = settings.data_dir / "sample"
    console.print(f"[bold]1/3[/] writing a sample retailer to {data}")
    write_sample(data, customers=200, orders=1500)
    console.print(f"[bold]2/3[/] migrating and importing into {settings.database_url}")
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    report = import_directory(data, engine)
    console.print(f"      {report.rows:,} rows in {report.seconds:.1f} s")
    console.print("[bold]3/3[/] summary")
    with engine.connect() as connection:
        console.print(summary_table(connection))
    engine.dispose()
    console.print(f"demo finished in {time.perf_counter() - started:.1f} s")


def summary_table(connection: Connection) -> Table:
    table = Table(title="Recoup state database")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name in (
        "customers",
        "locations",
        "products",
        "orders",
        "order_lines",
        "payments",
        "returns",
        "return_lines",
        "fraud_reviews",
    ):
        count = connection.execute(select(func.count()).select_from(metadata.tables[name])).scalar_one()
        table.add_row(name, f"{count:,}")
    sold = (
        connection.execute(
            select(func.sum(OrderLine.unit_price * OrderLine.quantity - OrderLine.discount))
        ).scalar_one()
        or 0
    )
    refunded = connection.execute(select(func.sum(ReturnLine.refund_amount))).scalar_one() or 0
    by_channel = connection.execute(select(Return.channel, func.count()).group_by(Return.channel)).all()
    table.add_section()
    table.add_row("sales value", f"{float(sold):,.2f}")
    table.add_row("refunded value", f"{float(refunded):,.2f}")
    table.add_row("return rate by value", f"{float(refunded) / float(sold or 1):.1%}")
    for channel, count in sorted(by_channel):
        table.add_row(f"returns via {channel}", f"{count:,}")
    return table
