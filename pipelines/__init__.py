"""Dagster code location (`pipelines.definitions:defs`): assets, checks, schedules and resources that
wrap `features` and `models` and write scores and analytics back to the database.
"""
