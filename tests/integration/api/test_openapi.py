"""The OpenAPI document: every documented operation exists and answers a documented
status, every served route is documented, and the schemas come from the models."""

from __future__ import annotations

from typing import Any

from tests.integration.api.conftest import PASSWORD, Client, app_of, bearer, register


async def fetch(api: Client) -> dict[str, Any]:
    response = await api.get("/api/v1/openapi.json")
    assert response.status == 200 and response.content_type == "application/json"
    doc: dict[str, Any] = await response.json()
    return doc


def resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        found: dict[str, Any] = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
        return found
    return schema


async def test_the_document_and_the_router_agree(api: Client) -> None:
    doc = await fetch(api)
    assert doc["openapi"] == "3.1.0"
    documented = {(m.upper(), path) for path, ops in doc["paths"].items() for m in ops}
    served = {
        (route.method, route.resource.canonical)
        for route in app_of(api).router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    assert documented == served
    assert ("GET", "/api/v1/users/me") in documented and ("GET", "/health") in documented


async def test_schemas_come_from_the_models(api: Client) -> None:
    doc = await fetch(api)
    register_op = doc["paths"]["/api/v1/auth/register"]["post"]
    body = resolve(doc, register_op["requestBody"]["content"]["application/json"]["schema"])
    assert body["additionalProperties"] is False
    assert body["required"] == ["username", "password"]
    assert body["properties"]["password"]["minLength"] == 8
    assert {"201", "400", "403", "409", "413", "415", "422", "429", "503"} == set(
        register_op["responses"]
    )
    me = doc["paths"]["/api/v1/users/me"]["get"]
    assert me["security"] == [{"bearer": []}]
    assert set(me["responses"]) == {"200", "401", "403", "429", "503"}
    assert "RateLimit-Remaining" in me["responses"]["429"]["headers"]
    user = resolve(doc, me["responses"]["200"]["content"]["application/json"]["schema"])
    assert set(user["properties"]) >= {"id", "username", "limits", "subscription_tier"}
    problem = resolve(doc, me["responses"]["401"]["content"]["application/problem+json"]["schema"])
    assert {"type", "title", "status"} <= set(problem["required"])
    assert doc["paths"]["/health"]["get"]["security"] == []


async def test_walk_every_documented_operation(api: Client) -> None:
    doc = await fetch(api)
    walker = (await register(api, "walker", PASSWORD))["tokens"]
    walked: dict[str, int] = {}
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            headers = bearer(walker["access_token"]) if operation["security"] else {}
            kwargs: dict[str, Any] = {"headers": headers}
            if "requestBody" in operation:
                schema = resolve(
                    doc, operation["requestBody"]["content"]["application/json"]["schema"]
                )
                kwargs["json"] = schema.get("examples", [{}])[0]
            response = await api.request(method.upper(), path, **kwargs)
            documented = operation["responses"]
            assert str(response.status) in documented, (method, path, await response.text())
            content = documented[str(response.status)].get("content")
            if content:
                assert response.content_type in content, (method, path)
            walked[f"{method.upper()} {path}"] = response.status
    # the examples succeed, except a made-up refresh token and the walker's password
    assert walked == {
        "GET /health": 200,
        "POST /api/v1/auth/register": 201,
        "POST /api/v1/auth/login": 200,
        "POST /api/v1/auth/refresh": 401,
        "POST /api/v1/auth/logout": 204,
        "GET /api/v1/users/me": 200,
        "PATCH /api/v1/users/me": 200,
        "POST /api/v1/users/me/password": 403,
        "GET /api/v1/usage": 200,
        "GET /api/v1/openapi.json": 200,
        # no Telegram configured in this app; the walker owns no session or chat
        "POST /api/v1/sessions/connect": 503,
        "POST /api/v1/sessions/{id}/code": 503,
        "POST /api/v1/sessions/{id}/password": 503,
        "POST /api/v1/sessions/connect/qr": 503,
        "GET /api/v1/sessions/{id}/qr": 404,
        "GET /api/v1/sessions": 200,
        "GET /api/v1/sessions/{id}": 404,
        "DELETE /api/v1/sessions/{id}": 404,
        "POST /api/v1/sessions/{id}/history/import": 404,
        "GET /api/v1/sessions/{id}/history/import": 404,
        "GET /api/v1/chats": 200,
        "GET /api/v1/chats/{id}/messages": 404,
        "GET /api/v1/chats/{id}/config": 404,
        "PUT /api/v1/chats/{id}/config": 404,
        "POST /api/v1/chats/{id}/send": 404,
        "GET /api/v1/chat-defaults": 200,
        "PUT /api/v1/chat-defaults": 200,
        "GET /api/v1/persona": 200,
        "PUT /api/v1/persona": 200,
        "GET /api/v1/leads": 200,
        # the token goes in ?access_token= or the subprotocol, not the header
        "GET /api/v1/events": 401,
    }
