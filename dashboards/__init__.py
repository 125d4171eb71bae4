"""Streamlit app (`dashboards/app.py`): review queue, return rates, operations and model pages.

Reads the analytics tables and goes through `oms` services for decisions; never imports `api`.
"""
