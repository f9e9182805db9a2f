"""The public API's routes, one module per resource; :func:`all_routes` is the table."""

from __future__ import annotations

from vibee.api.routes import auth, meta, usage, users
from vibee.api.routing import Route


def all_routes() -> list[Route]:
    """Every route of the public API, in the order the OpenAPI document lists them."""
    return [*meta.routes(), *auth.routes(), *users.routes(), *usage.routes()]
