"""Errors of the public API as RFC 9457 ``application/problem+json`` responses.

Exceptions::

    ApiError                 any answer other than success: status, title, detail, headers
    ├── Unauthorized         401, with ``WWW-Authenticate: Bearer``
    ├── Forbidden            403
    ├── NotFound             404
    ├── Conflict             409
    ├── InvalidBody          400 malformed JSON, 413 too large, 415 not JSON, 422 invalid
    ├── RateLimited          429, with ``Retry-After`` and ``RateLimit-*``
    └── Unavailable          503, with ``Retry-After`` (the database is unreachable)

Handlers raise these; the edge middleware (:mod:`vibee.api.routing`) turns them into
responses. ``type`` is ``urn:vibee:problem:<slug>``; the ``title`` is stable per type, the
``detail`` says what happened for this request. Neither ever holds a secret (a token, a
password) nor echoes request input: validation errors name the field, not its value.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web

PROBLEM_JSON = "application/problem+json"


def problem_type(slug: str) -> str:
    """The ``type`` URI of the problem called ``slug``."""
    return f"urn:vibee:problem:{slug}"


class ApiError(Exception):
    """An answer other than success, rendered as problem+json by :meth:`response`."""

    status = 500
    slug = "internal-error"
    title = "Internal server error"

    def __init__(
        self,
        detail: str = "",
        *,
        title: str | None = None,
        slug: str | None = None,
        headers: dict[str, str] | None = None,
        errors: list[dict[str, str]] | None = None,
    ) -> None:
        """An error with this class's status; ``title``/``slug`` override the class's."""
        super().__init__(detail or title or self.title)
        self.detail = detail
        if title is not None:
            self.title = title
        if slug is not None:
            self.slug = slug
        self.headers: dict[str, str] = dict(headers or {})
        self.errors = errors

    def body(self) -> dict[str, Any]:
        """The problem document."""
        body: dict[str, Any] = {
            "type": problem_type(self.slug),
            "title": self.title,
            "status": self.status,
        }
        if self.detail:
            body["detail"] = self.detail
        if self.errors is not None:
            body["errors"] = self.errors
        return body

    def response(self) -> web.Response:
        """The problem+json response, with this error's headers."""
        return problem_response(self.status, self.body(), self.headers)


class Unauthorized(ApiError):
    """401: no credentials, or credentials that do not verify."""

    status = 401
    slug = "unauthorized"
    title = "Authentication required"

    def __init__(self, detail: str = "", *, invalid_token: bool = False, **kw: Any) -> None:
        """``invalid_token`` adds RFC 6750's ``error="invalid_token"`` to the challenge."""
        super().__init__(detail, **kw)
        challenge = 'Bearer realm="vibee"'
        if invalid_token:
            challenge += ', error="invalid_token"'
        self.headers.setdefault("WWW-Authenticate", challenge)


class Forbidden(ApiError):
    """403: authenticated, but not allowed (a disabled account, a wrong password)."""

    status = 403
    slug = "forbidden"
    title = "Forbidden"


class NotFound(ApiError):
    """404: no such resource for this user (another user's resources do not exist)."""

    status = 404
    slug = "not-found"
    title = "Not found"


class Conflict(ApiError):
    """409: the request conflicts with the current state (a taken username)."""

    status = 409
    slug = "conflict"
    title = "Conflict"


class InvalidBody(ApiError):
    """400, 413, 415 or 422: the request body cannot be used."""

    status = 422
    slug = "invalid-body"
    title = "Invalid request body"

    def __init__(self, status: int, detail: str, **kw: Any) -> None:
        """An invalid body answered with ``status``."""
        super().__init__(detail, **kw)
        self.status = status


class RateLimited(ApiError):
    """429: a rate limit refused the request."""

    status = 429
    slug = "rate-limited"
    title = "Too many requests"


class Unavailable(ApiError):
    """503: a dependency (the database) does not answer; retry later."""

    status = 503
    slug = "unavailable"
    title = "Service unavailable"

    def __init__(self, detail: str = "", **kw: Any) -> None:
        """Asks the client to retry after a second."""
        super().__init__(detail, **kw)
        self.headers.setdefault("Retry-After", "1")


def problem_response(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> web.Response:
    """A problem+json response with ``body``."""
    response = web.Response(body=orjson.dumps(body), status=status, content_type=PROBLEM_JSON)
    if headers:
        response.headers.update(headers)
    return response


def from_http_exception(exc: web.HTTPException) -> web.Response:
    """aiohttp's own errors (unknown route, wrong method, body too large) as problem+json."""
    status = exc.status
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = exc.reason
    details = {
        404: "no such route",
        405: f"this route accepts {exc.headers.get('Allow', 'other methods')}",
        413: "the request body is too large",
    }
    slugs = {404: "not-found", 405: "method-not-allowed", 413: "invalid-body"}
    body: dict[str, Any] = {
        "type": problem_type(slugs.get(status, "http-error")),
        "title": title,
        "status": status,
    }
    if status in details:
        body["detail"] = details[status]
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    return problem_response(status, body, headers)
