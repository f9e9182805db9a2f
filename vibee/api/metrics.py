"""The public API's Prometheus metrics (DESIGN 6.4).

* ``vibee_http_requests_total{route,method,status}`` — ``route`` is the route's path
  template (``/api/v1/users/me``), ``unmatched`` for paths no route serves; ``method`` is
  one of the standard methods or ``OTHER``. Every label comes from a bounded set.
* ``vibee_http_request_duration_seconds{route}`` — time in the handler, middleware included.
* ``vibee_rate_limited_total{limit}`` — requests refused by a rate limit, by limit name.

:class:`HttpMetrics` keeps the labelled children it has seen, so the hot path does a dict
lookup instead of ``labels()``.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

HTTP_REQUESTS = Counter(
    "vibee_http_requests",
    "HTTP requests served by the public API, by route template, method and status.",
    ["route", "method", "status"],
)
HTTP_DURATION = Histogram(
    "vibee_http_request_duration_seconds",
    "Time the public API took to answer, by route template.",
    ["route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RATE_LIMITED = Counter(
    "vibee_rate_limited",
    "Requests refused by a rate limit, by limit (api, auth_ip, token_ip, password).",
    ["limit"],
)

UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class HttpMetrics:
    """Records one request in both HTTP metrics, caching the labelled children."""

    def __init__(self) -> None:
        """No children cached yet."""
        self._counters: dict[tuple[str, str, int], Counter] = {}
        self._histograms: dict[str, Histogram] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count a request to ``route`` and record how long it took."""
        key = (route, method if method in METHODS else "OTHER", status)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = HTTP_REQUESTS.labels(key[0], key[1], str(status))
        counter.inc()
        histogram = self._histograms.get(route)
        if histogram is None:
            histogram = self._histograms[route] = HTTP_DURATION.labels(route)
        histogram.observe(seconds)
