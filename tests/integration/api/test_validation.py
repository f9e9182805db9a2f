"""Bad input gets a 4xx problem naming the field, never a 5xx: wrong types, unknown and
missing fields, malformed JSON, wrong content type, oversized and empty bodies."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.api.conftest import (
    PASSWORD,
    Client,
    MakeApi,
    app_of,
    bearer,
    problem,
    register,
)
from vibee.api.app import ROUTES


async def body_routes(api: Client) -> list[tuple[str, str, dict[str, str], bool]]:
    """Every route with a body, with the headers that get it past authentication, and
    whether the body is required."""
    pair = (await register(api, "alice"))["tokens"]
    routes = [r for r in app_of(api)[ROUTES] if r.body is not None]
    assert len(routes) == 14
    assert [r.name for r in routes if not r.body_required] == ["start_history_import"]
    return [
        (r.method, r.path, bearer(pair["access_token"]) if r.auth else {}, r.body_required)
        for r in routes
    ]


async def test_every_body_route_rejects_bad_bodies(api: Client) -> None:
    for method, path, headers, required in await body_routes(api):
        # an optional body left out is the defaults: the handler answers (404: no such id)
        empty = 400 if required else 404
        cases: list[tuple[Any, dict[str, str], int]] = [
            (b'{"username": ', {"Content-Type": "application/json"}, 400),
            (b"", {"Content-Type": "application/json"}, empty),
            (b"\xff\xfe", {"Content-Type": "application/json"}, 400),
            (b"{}", {"Content-Type": "text/plain"}, 415),
            (b"{}", {}, 415),
            (b"[]", {"Content-Type": "application/json"}, 422),
            (b'{"unexpected": 1}', {"Content-Type": "application/json"}, 422),
            (b"null", {"Content-Type": "application/json"}, 422),
        ]
        for data, extra, status in cases:
            response = await api.request(method, path, data=data, headers={**headers, **extra})
            await problem(response, status)


@pytest.mark.parametrize(
    ("path", "payload", "detail"),
    [
        (
            "/api/v1/auth/register",
            {"username": "alice2", "password": "short"},
            "password: String should have at least 8 characters",
        ),
        (
            "/api/v1/auth/register",
            {"username": "bad name!", "password": PASSWORD},
            "username: String should match pattern",
        ),
        (
            "/api/v1/auth/register",
            {"username": "x" * 65, "password": PASSWORD},
            "username: String should have at most 64 characters",
        ),
        (
            "/api/v1/auth/register",
            {"username": 5, "password": PASSWORD},
            "username: Input should be a valid string",
        ),
        ("/api/v1/auth/register", {"password": PASSWORD}, "username: required field is missing"),
        (
            "/api/v1/auth/register",
            {"username": "bob", "password": PASSWORD, "admin": True},
            "admin: unknown field",
        ),
        (
            "/api/v1/auth/login",
            {"username": "a\u0000b", "password": "x"},
            "username: String should match",
        ),
        (
            "/api/v1/auth/login",
            {"username": "alice", "password": ""},
            "password: String should have at least 1",
        ),
        (
            "/api/v1/auth/refresh",
            {"refresh_token": 12},
            "refresh_token: Input should be a valid string",
        ),
        (
            "/api/v1/auth/logout",
            {"refresh_token": "short"},
            "refresh_token: String should have at least 16",
        ),
    ],
)
async def test_the_detail_names_the_field(
    api: Client, path: str, payload: dict[str, Any], detail: str
) -> None:
    response = await api.post(path, json=payload)
    body = await problem(response, 422)
    assert body["detail"].startswith(detail), body
    assert body["errors"][0]["loc"] == detail.split(":")[0]
    assert PASSWORD not in await response.text()


async def test_display_name_is_checked(api: Client) -> None:
    pair = (await register(api, "alice"))["tokens"]
    headers = bearer(pair["access_token"])
    for value, field in [
        ("", "display_name"),
        ("   ", "display_name"),
        ("a\u0000b", "display_name"),
        ("tab\there", "display_name"),
        ("x" * 65, "display_name"),
        (None, "display_name"),
        (["x"], "display_name"),
    ]:
        response = await api.patch(
            "/api/v1/users/me", json={"display_name": value}, headers=headers
        )
        body = await problem(response, 422)
        assert body["errors"][0]["loc"] == field
    response = await api.patch("/api/v1/users/me", json={"display_name": "Zoë 🐝"}, headers=headers)
    assert (await response.json())["display_name"] == "Zoë 🐝"


async def test_new_password_is_checked(api: Client) -> None:
    pair = (await register(api, "alice"))["tokens"]
    response = await api.post(
        "/api/v1/users/me/password",
        json={"current_password": PASSWORD, "new_password": "short"},
        headers=bearer(pair["access_token"]),
    )
    body = await problem(response, 422)
    assert body["detail"] == "new_password: String should have at least 8 characters"


async def test_an_oversized_body_is_413(make_api: MakeApi) -> None:
    api = await make_api(max_body_bytes=1024)
    payload = {"username": "alice", "password": "x" * 2000}
    response = await api.post("/api/v1/auth/login", json=payload)
    await problem(response, 413)

    async def chunks() -> Any:  # no Content-Length: the limit holds while reading
        for _ in range(4):
            yield b" " * 512

    chunked = await api.post(
        "/api/v1/auth/login", data=chunks(), headers={"Content-Type": "application/json"}
    )
    await problem(chunked, 413)
