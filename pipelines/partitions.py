"""Partitions, declared once: returns are processed by the month they were requested in."""

from __future__ import annotations

import dagster as dg
import pandas as pd

from oms.settings import get_settings

monthly = dg.MonthlyPartitionsDefinition(start_date=get_settings().pipeline_start, end_offset=1)


def month_window(partition_key: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    start = pd.Timestamp(partition_key, tz="UTC")
    return start, start + pd.offsets.MonthBegin(1)
