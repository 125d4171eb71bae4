"""Fuzz every operation from the OpenAPI document (schemathesis) over real HTTP: never a 5xx."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings

from api.main import create_app
from tests.api.conftest import Api

schema = schemathesis.openapi.from_dict(create_app(None).openapi())


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case, api: Api) -> None:
    response = case.call(base_url=api.url, headers=api.headers("admin"))
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
    )
