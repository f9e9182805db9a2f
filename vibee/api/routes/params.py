"""Path and query parameters of the session and chat routes: reading them (a bad value is a
404 for an id, a 422 naming the parameter for a query) and documenting them in OpenAPI.

:class:`~vibee.api.routing.Route` declares bodies, not parameters, so the route modules
list theirs in :data:`Params` tables and :func:`annotate` adds them to the document.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from vibee.api.errors import InvalidBody, NotFound
from vibee.api.routing import Call

INT64_MAX = 2**63 - 1
Params = Mapping[tuple[str, str], list[dict[str, Any]]]
"""(method, path template) → the operation's OpenAPI parameter objects."""


def aiohttp_path(path: str) -> str:
    """``path`` as registered with aiohttp: each ``{name}`` matches any one segment, braces
    included, so a template requested literally reaches the handler (auth first, then a
    404 for the id) instead of the router's "no such route"."""
    return re.sub(r"\{([_a-zA-Z][_a-zA-Z0-9]*)\}", r"{\1:[^/]+}", path)


def path_id(call: Call, what: str) -> int:
    """The ``{id}`` of the path; an id that cannot exist is a 404 like an unknown one."""
    raw = call.request.match_info["id"]
    if raw.isascii() and raw.isdigit() and len(raw) <= 19 and 1 <= int(raw) <= INT64_MAX:
        return int(raw)
    raise NotFound(f"no {what} {raw[:40]!r}")


def query_int(
    call: Call, name: str, *, default: int | None, low: int = 1, high: int = INT64_MAX
) -> int | None:
    """Query parameter ``name`` as an integer in ``[low, high]`` (``default`` if absent).
    Raises a 422 naming the parameter."""
    raw = call.request.query.get(name)
    if raw is None:
        return default
    text = raw.strip()
    digits = text[1:] if text.startswith("-") else text
    if digits.isascii() and digits.isdigit() and len(digits) <= 19 and low <= int(text) <= high:
        return int(text)
    msg = f"must be an integer between {low} and {high}"
    raise InvalidBody(
        422,
        f"{name}: {msg}",
        title="Invalid query parameter",
        slug="invalid-query",
        errors=[{"loc": name, "msg": msg, "type": "int_parsing"}],
    )


def id_param(description: str) -> dict[str, Any]:
    """The OpenAPI object of the ``{id}`` path parameter."""
    return {
        "name": "id",
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "integer", "minimum": 1, "maximum": INT64_MAX},
    }


def int_query(
    name: str, description: str, *, low: int = 1, high: int = INT64_MAX, default: int | None = None
) -> dict[str, Any]:
    """The OpenAPI object of an optional integer query parameter."""
    schema: dict[str, Any] = {"type": "integer", "minimum": low, "maximum": high}
    if default is not None:
        schema["default"] = default
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def annotate(document: dict[str, Any], tables: Iterable[Params]) -> dict[str, Any]:
    """``document`` with the parameters of ``tables`` added to their operations."""
    paths = document["paths"]
    for table in tables:
        for (method, path), parameters in table.items():
            operation = paths.get(path, {}).get(method.lower())
            if operation is not None:
                operation["parameters"] = parameters
    return document
