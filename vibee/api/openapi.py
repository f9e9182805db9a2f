"""The OpenAPI 3.1 document, generated from the route table and the pydantic models.

Each :class:`~vibee.api.routing.Route` becomes one operation: its request body schema
(validation mode), its success response (serialization mode), every status of
:meth:`Route.statuses` (problem+json), its security (bearer JWT) and, for rate-limited
routes, the ``RateLimit-*`` and ``Retry-After`` headers. Nothing is written by hand, so
the document says what the server does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from vibee.api.routing import Route
from vibee.api.schemas import Problem

Mode = Literal["validation", "serialization"]
_REF = "#/components/schemas/{model}"
_INT_HEADER = {"schema": {"type": "integer", "minimum": 0}}
_LIMIT_HEADERS = {
    "RateLimit-Limit": {"description": "Requests allowed per minute.", **_INT_HEADER},
    "RateLimit-Remaining": {"description": "Requests left right now.", **_INT_HEADER},
    "RateLimit-Reset": {
        "description": "Seconds until the limit is fully replenished.",
        **_INT_HEADER,
    },
}
_DESCRIPTION = (
    "VIBEE's public API. Errors are RFC 9457 problem documents "
    "(`application/problem+json`) whose `type` is `urn:vibee:problem:<slug>`; a 422 lists "
    "the invalid fields in `errors`. Authenticate with `Authorization: Bearer <access "
    "token>`; access tokens expire after `expires_in` seconds, refresh them with "
    "`POST /api/v1/auth/refresh` (each refresh token works once)."
)


def _models(routes: Sequence[Route]) -> list[tuple[type[BaseModel], Mode]]:
    found: list[tuple[type[BaseModel], Mode]] = [(Problem, "serialization")]
    for route in routes:
        if route.body is not None and (route.body, "validation") not in found:
            found.append((route.body, "validation"))
        if route.response is not None and (route.response, "serialization") not in found:
            found.append((route.response, "serialization"))
    return found


def _error_response(status: int, problem_ref: dict[str, Any]) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": HTTPStatus(status).phrase,
        "content": {"application/problem+json": {"schema": problem_ref}},
    }
    if status == 401:
        response["headers"] = {
            "WWW-Authenticate": {"description": "Bearer challenge.", "schema": {"type": "string"}}
        }
    elif status == 429:
        response["headers"] = {
            **_LIMIT_HEADERS,
            "Retry-After": {"description": "Seconds to wait.", **_INT_HEADER},
        }
    elif status == 503:
        response["headers"] = {"Retry-After": {"description": "Seconds to wait.", **_INT_HEADER}}
    return response


def _operation(route: Route, refs: Mapping[tuple[Any, Mode], Any]) -> dict[str, Any]:
    problem_ref = refs[(Problem, "serialization")]
    ok: dict[str, Any] = {"description": HTTPStatus(route.ok).phrase}
    if route.response is not None:
        ok["content"] = {route.content_type: {"schema": refs[(route.response, "serialization")]}}
    elif route.ok != 204:
        ok["content"] = {route.content_type: {"schema": {"type": "object"}}}
    if route.limits:
        ok["headers"] = dict(_LIMIT_HEADERS)
    responses: dict[str, Any] = {str(route.ok): ok}
    for status in route.statuses():
        if status != route.ok:
            responses[str(status)] = _error_response(status, problem_ref)
    operation: dict[str, Any] = {
        "operationId": route.name,
        "summary": route.summary,
        "tags": [route.tag],
        "security": [{"bearer": []}] if route.auth else [],
        "responses": responses,
    }
    if route.body is not None:
        operation["requestBody"] = {
            "required": route.body_required,
            "content": {"application/json": {"schema": refs[(route.body, "validation")]}},
        }
    return operation


def document(routes: Sequence[Route], version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document describing ``routes``."""
    models = _models(routes)
    refs, definitions = models_json_schema(models, ref_template=_REF)
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, refs)
    return {
        "openapi": "3.1.0",
        "info": {"title": "VIBEE API", "version": version, "description": _DESCRIPTION},
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }
