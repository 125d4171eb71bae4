"""Point-in-time return features: one declaration per feature, computed offline (pandas, every return
as of its request time) and online (one request, read from the database) by the same definitions.

Imports `oms` only; never Dagster, FastAPI or Streamlit.
"""
