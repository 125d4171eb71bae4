"""Dagster assets, one module per area; each asset is a thin wrapper over `features` / `models`."""
