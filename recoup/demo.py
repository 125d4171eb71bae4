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
from simulator.retailer import SimulationConfig, simulate


def run_demo(console: Console, serve: bool = True, data: str = "simulated", customers: int = 5_000) -> None:
    settings = get_settings()
    started = time.perf_counter()
    if data == "uci":
        from simulator.uci import convert_uci

        directory = settings.data_dir / "uci-online-retail"
        console.print(f"[bold]1/3[/] converting the UCI Online Retail file into {directory}")
        console.print(str(convert_uci(settings.uci_path, directory)), markup=False, highlight=False)
    else:
        directory = settings.data_dir / "simulated"
        console.print(
            f"[bold]1/3[/] simulating a retailer ({customers:,} customers, 12 months) into {directory}"
        )
        result = simulate(SimulationConfig(customers=customers, months=12), directory)
        figures = result.figures
        console.print(
            f"      return rate by value {figures['return_rate_by_value']:.1%}, fraud+abuse "
            f"{figures['fraud_abuse_share_of_returns']:.1%} of returns ({result.seconds:.1f} s)"
        )
    data_dir = directory
    console.print(f"[bold]2/3[/] migrating and importing into {settings.database_url}")
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    report = import_directory(data_dir, engine)
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
