"""HTTP API (FastAPI): return lifecycle and scoring endpoints, API-key auth, OpenAPI.

May import `oms`, `features` and `models`; never `pipelines` or `dashboards`.
"""
