"""Fraud/abuse classifier and recovery-value regressor (LightGBM), evaluation, MLflow registry and the
champion loader, reason codes.

Imports `features` and `oms`; never Dagster, FastAPI or Streamlit.
"""
