"""The lifecycle over real HTTP: contract, errors, idempotency, concurrency, auth on every endpoint."""

from __future__ import annotations

import re
import threading
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import func, select

from api.auth import SCOPE_EXTENSION, required_scope
from oms.tables import Return
from oms.uow import unit_of_work
from tests.api.conftest import Api, LiveServer

WEB_RETURN = {
    "channel": "mail",
    "order_id": "W-1001",
    "location_id": "W1",
    "lines": [{"order_line_no": 2, "quantity": 1, "reason": "doesnt_fit"}],
}


def _count_returns(api: Api) -> int:
    with unit_of_work(api.engine) as session:
        return session.execute(select(func.count()).select_from(Return)).scalar_one()


def test_full_lifecycle_over_http(api: Api) -> None:
    created = api.client.post("/v1/returns", json=WEB_RETURN, headers=api.headers("till"))
    assert created.status_code == 201, created.text
    body = created.json()
    return_id = body["return_id"]
    assert body["status"] == "authorized" and body["rma_number"].startswith("RMA-")
    steps = [
        ("receive", {}),
        ("inspect", {"lines": [{"line_no": 1, "condition": "new"}]}),
        ("dispose", {}),
        ("refund", {}),
    ]
    for step, payload in steps:
        response = api.client.post(
            f"/v1/returns/{return_id}/{step}", json=payload, headers=api.headers("till")
        )
        assert response.status_code == 200, (step, response.text)
    final = api.client.get(f"/v1/returns/{return_id}", headers=api.headers("returns:read")).json()
    assert final["status"] == "completed"
    assert final["lines"][0]["disposition"] == "restock"
    assert Decimal(final["refunds"][0]["amount"]) == Decimal("20.00")
    assert [a["payment_id"] for a in final["refunds"][0]["allocations"]] == ["W-1001-GC"]
    assert [e["kind"] for e in final["timeline"]][-1] == "complete"
    found = api.client.get(
        "/v1/returns", params={"rma_number": body["rma_number"]}, headers=api.headers("returns:read")
    ).json()
    assert [r["return_id"] for r in found] == [return_id]
    by_order = api.client.get(
        "/v1/returns", params={"order_id": "W-1001"}, headers=api.headers("returns:read")
    ).json()
    assert return_id in [r["return_id"] for r in by_order]


def test_domain_errors_map_to_status_codes(api: Api) -> None:
    missing = api.client.get("/v1/returns/NOPE", headers=api.headers("returns:read"))
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    bad = api.client.post("/v1/returns", json={**WEB_RETURN, "order_id": "NOPE"}, headers=api.headers("till"))
    assert bad.status_code == 422 and "order 'NOPE' does not exist" in bad.json()["error"]["message"]
    invalid = api.client.post(
        "/v1/returns", json={"channel": "mail", "lines": []}, headers=api.headers("till")
    )
    assert invalid.status_code == 422 and invalid.json()["error"]["message"].startswith("body.lines")
    created = api.client.post("/v1/returns", json=WEB_RETURN, headers=api.headers("till")).json()
    illegal = api.client.post(
        f"/v1/returns/{created['return_id']}/refund", json={}, headers=api.headers("till")
    )
    assert illegal.status_code == 409 and illegal.json()["error"]["code"] == "illegal_transition"


def test_an_uneven_exchange_needs_stock_and_waits_for_its_payment(api: Api) -> None:
    exchange = {
        "channel": "store",
        "order_id": "S-2001",
        "location_id": "S1",
        "refund_method": "exchange",
        "receive_now": True,
        "refund_now": True,
        "lines": [
            {
                "order_line_no": 1,
                "quantity": 1,
                "reason": "changed_mind",
                "condition": "new",
                "replacement_sku": "HOODIE-M",
            }
        ],
    }
    before = _count_returns(api)
    short = api.client.post("/v1/returns", json=exchange, headers=api.headers("till"))
    assert short.status_code == 409, short.text
    assert short.json()["error"] == {
        "code": "insufficient_stock",
        "message": "location S1 has 0 sellable unit(s) of HOODIE-M; the exchange needs 1",
    }
    assert _count_returns(api) == before  # nothing half-written
    count = {"sellable": 2}
    assert (
        api.client.put("/v1/inventory/S1/HOODIE-M", json=count, headers=api.headers("till")).status_code
        == 403
    )
    for _ in range(2):  # a count is safe to repeat
        counted = api.client.put(
            "/v1/inventory/S1/HOODIE-M", json=count, headers=api.headers("inventory:write")
        )
        assert counted.status_code == 200 and counted.json()["buckets"] == {"sellable": 2}, counted.text
    created = api.client.post("/v1/returns", json=exchange, headers=api.headers("till"))
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["status"] == "awaiting_payment" and Decimal(body["amount_due"]) == Decimal("20.00")
    assert body["refunds"] == []  # the till refunds nothing while a payment is due
    path = f"/v1/returns/{body['return_id']}/payment"
    wrong = api.client.post(path, json={"amount": "13.99", "method": "card"}, headers=api.headers("till"))
    assert wrong.status_code == 422 and "has 20.00 due for its exchanges" in wrong.text
    paid = api.client.post(
        path, json={"amount": "20.00", "method": "card", "reference": "AUTH-1"}, headers=api.headers("till")
    )
    assert paid.status_code == 200, paid.text
    assert paid.json()["status"] == "received" and Decimal(paid.json()["amount_due"]) == Decimal("0.00")
    assert paid.json()["timeline"][-1]["kind"] == "pay"
    again = api.client.post(path, json={"amount": "20.00", "method": "card"}, headers=api.headers("till"))
    assert again.status_code == 409 and again.json()["error"]["code"] == "illegal_transition"
    stock = api.client.get("/v1/inventory/S1/HOODIE-M", headers=api.headers("returns:read")).json()
    assert stock["buckets"] == {"sellable": 1, "reserved": 1}


def test_a_decision_needs_its_fraud_type_and_shows_on_the_return_at_once(api: Api) -> None:
    created = api.client.post("/v1/returns", json=WEB_RETURN, headers=api.headers("till")).json()
    path = f"/v1/returns/{created['return_id']}/decision"
    untyped = api.client.post(path, json={"outcome": "abuse"}, headers=api.headers("review"))
    assert untyped.status_code == 422 and "needs a fraud_type, one of wardrobing" in untyped.text
    unknown = api.client.post(
        path, json={"outcome": "abuse", "fraud_type": "shoplifting"}, headers=api.headers("review")
    )
    assert unknown.status_code == 422 and "fraud_type" in unknown.text
    decided = api.client.post(
        path, json={"outcome": "abuse", "fraud_type": "wardrobing"}, headers=api.headers("review")
    )
    assert decided.status_code == 200, decided.text
    shown = api.client.get(f"/v1/returns/{created['return_id']}", headers=api.headers("returns:read")).json()
    assert shown["review"]["outcome"] == "abuse" and shown["review"]["fraud_type"] == "wardrobing"
    assert shown["review"]["source"] == "rule_flag" and shown["status"] == "authorized"
    # the goods may still come back, but the refund is held
    return_id = created["return_id"]
    received = api.client.post(f"/v1/returns/{return_id}/receive", json={}, headers=api.headers("till"))
    assert received.status_code == 200, received.text
    refund = api.client.post(f"/v1/returns/{return_id}/refund", json={}, headers=api.headers("till"))
    assert refund.status_code == 409 and refund.json()["error"]["code"] == "refund_held", refund.text
    assert "decided it abuse (wardrobing)" in refund.json()["error"]["message"]


def test_idempotency_key_replays_without_a_second_effect(api: Api) -> None:
    headers = api.headers("till", **{"Idempotency-Key": "till-7-txn-1"})
    first = api.client.post("/v1/returns", json=WEB_RETURN, headers=headers)
    again = api.client.post("/v1/returns", json=WEB_RETURN, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert _count_returns(api) == 1
    other = api.client.post("/v1/returns", json={**WEB_RETURN, "channel": "store"}, headers=headers)
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
    return_id = first.json()["return_id"]
    receive = api.headers("till", **{"Idempotency-Key": "receive-1"})
    assert api.client.post(f"/v1/returns/{return_id}/receive", json={}, headers=receive).status_code == 200
    assert (
        api.client.post(f"/v1/returns/{return_id}/receive", json={}, headers=receive).status_code == 200
    )  # replayed, not 409


def test_concurrent_requests_with_one_idempotency_key_have_one_effect(api: Api) -> None:
    headers = api.headers("till", **{"Idempotency-Key": "burst"})
    results: list[int] = []
    barrier = threading.Barrier(4)

    def call() -> None:
        with httpx.Client(base_url=api.url, timeout=30) as client:
            barrier.wait()
            results.append(client.post("/v1/returns", json=WEB_RETURN, headers=headers).status_code)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert _count_returns(api) == 1
    assert all(code in (201, 409) for code in results) and results.count(201) >= 1


@pytest.mark.parametrize("attempt", range(3))
def test_conflicting_concurrent_transitions_exactly_one_wins(api: Api, attempt: int) -> None:
    created = api.client.post("/v1/returns", json=WEB_RETURN, headers=api.headers("till")).json()
    return_id = created["return_id"]
    barrier = threading.Barrier(2)
    results: dict[str, int] = {}

    def call(step: str) -> None:
        with httpx.Client(base_url=api.url, timeout=30) as client:
            barrier.wait()
            results[step] = client.post(
                f"/v1/returns/{return_id}/{step}", json={}, headers=api.headers("till")
            ).status_code

    threads = [threading.Thread(target=call, args=(step,)) for step in ("receive", "cancel")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results.values()) == [200, 409], results
    final = api.client.get(f"/v1/returns/{return_id}", headers=api.headers("returns:read")).json()
    winner = "receive" if results["receive"] == 200 else "cancel"
    assert final["status"] == {"receive": "received", "cancel": "cancelled"}[winner]
    assert [e["kind"] for e in final["timeline"]] == ["requested", "authorize", winner]


def test_overlapping_till_returns_at_once_never_refund_more_than_was_paid(api: Api) -> None:
    """Ten tills return 2 of the 3 mugs of W-1001 at the same moment, each received and refunded at once:
    one wins; the others are refused with what remains (1 unit), not refunded a second time."""
    store_return = {
        "channel": "store",
        "order_id": "W-1001",
        "location_id": "S1",
        "receive_now": True,
        "refund_now": True,
        "lines": [{"order_line_no": 3, "quantity": 2, "reason": "changed_mind"}],
    }
    barrier = threading.Barrier(10)
    results: list[httpx.Response] = []

    def call() -> None:
        with httpx.Client(base_url=api.url, timeout=30) as client:
            barrier.wait()
            results.append(client.post("/v1/returns", json=store_return, headers=api.headers("till")))

    threads = [threading.Thread(target=call) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    codes = sorted(r.status_code for r in results)
    assert codes == [201] + [422] * 9, [r.text for r in results]
    refused = [r.json()["error"]["message"] for r in results if r.status_code == 422]
    assert all("only 1 of line 3 remain returnable" in message for message in refused)
    refunded = next(r.json()["refunds"] for r in results if r.status_code == 201)
    assert [Decimal(refund["amount"]) for refund in refunded] == [Decimal("20.00")]  # 2 x (12.50 - 2.50)


def _operations(api: Api) -> list[tuple[str, str, str]]:
    schema = api.client.get("/openapi.json").json()
    found = []
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            concrete = re.sub(r"\{[^}]+\}", "X1", path)
            found.append((method.upper(), concrete, operation[SCOPE_EXTENSION]))
    return found


def test_every_endpoint_needs_a_key_and_its_scope(api: Api) -> None:
    operations = _operations(api)
    assert len(operations) >= 12
    lacking = {
        "returns:read": "review",
        "returns:write": "returns:read",
        "review": "returns:write",
        "inventory:write": "returns:write",
    }
    for method, path, scope in operations:
        assert required_scope(method, path) == scope, (method, path)
        anonymous = api.client.request(method, path, json={})
        assert anonymous.status_code == 401, (method, path)
        wrong_key = api.client.request(
            method, path, json={}, headers={"Authorization": "Bearer rk_nope.nope"}
        )
        assert wrong_key.status_code == 401, (method, path)
        forbidden = api.client.request(method, path, json={}, headers=api.headers(lacking[scope]))
        assert forbidden.status_code == 403, (method, path, forbidden.text)
        allowed = api.client.request(method, path, json={}, headers=api.headers("admin"))
        assert allowed.status_code not in (401, 403), (method, path)


def test_a_revoked_key_stops_working_once_its_cache_entry_expires(api: Api, live_server: LiveServer) -> None:
    """Verified keys are cached (no database read or thread hop per request); revocation wins once the
    entry is older than the ttl."""
    import time

    from api.state import KeyCache
    from oms.apikeys import revoke

    live_server.app.state.recoup.keys = KeyCache(ttl=0.5)
    headers = api.headers("returns:read")
    token = api.keys["returns:read"]
    assert api.client.get("/v1/ping", headers=headers).status_code == 200
    known, principal = live_server.app.state.recoup.keys.cached(token)
    assert known and principal is not None and principal.allows("returns:read")
    with unit_of_work(api.engine) as session:
        assert revoke(session, token.removeprefix("rk_").split(".")[0])
    assert api.client.get("/v1/ping", headers=headers).status_code == 200  # cached: within the ttl
    time.sleep(0.6)
    assert api.client.get("/v1/ping", headers=headers).status_code == 401
    assert live_server.app.state.recoup.keys.cached(token) == (True, None)  # refusals are cached too


def test_openapi_documents_examples_and_security(api: Api) -> None:
    schema = api.client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    create = schema["components"]["schemas"]["ReturnCreate"]
    assert create["examples"][0]["channel"] == "store"
    docs = api.client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_the_docs_pages_load_every_asset_from_the_api_itself(api: Api) -> None:
    """Offline: Swagger UI and ReDoc take their scripts and styles from this server, never a CDN."""
    for page, needed in (("/docs", 3), ("/redoc", 2)):
        html = api.client.get(page)
        assert html.status_code == 200, page
        assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html.text)
        assert len(assets) >= needed, (page, assets)
        for asset in assets:
            assert asset.startswith("/"), (page, asset)  # no http(s):// anywhere
            loaded = api.client.get(asset)
            assert loaded.status_code == 200 and len(loaded.content) > 1000, (page, asset)
        assert "http://" not in html.text.replace("http://www.w3.org", "") and "https://" not in html.text
    assert api.client.get("/docs-static/nothing.js").status_code == 404


def test_documentation_can_be_switched_off(api: Api, live_server: LiveServer) -> None:
    live_server.app.state.recoup.serve_docs = False
    for path in ("/docs", "/redoc", "/openapi.json", "/docs-static/swagger-ui-bundle.js"):
        response = api.client.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"
    assert api.client.get("/v1/ping", headers=api.headers("returns:read")).status_code == 200
