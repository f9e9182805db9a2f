"""What HTTP providers share: one pooled session, timeouts, error classification, Retry-After."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson

from vibee.ai.base import PermanentError, ProviderError, RetryableError

RETRY_AFTER_CAP_S = 60.0
_RETRYABLE = frozenset({408, 409, 429, 529})
_PERMANENT_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached"})


def parse_retry_after(
    headers: Mapping[str, str], now: float | None = None, cap: float = RETRY_AFTER_CAP_S
) -> float | None:
    """Seconds to wait from ``retry-after-ms``, else ``Retry-After`` (seconds or HTTP date)."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return min(cap, max(0.0, float(raw_ms) / 1000))
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return min(cap, max(0.0, float(raw)))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return min(cap, max(0.0, when - (time.time() if now is None else now)))


def error_code(body: Any) -> str:
    """The provider's machine-readable error code or type, if the body has one."""
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return ""
    error = body["error"]
    for key in ("code", "type"):
        if isinstance(error.get(key), str):
            return str(error[key])
    return ""


def classify(provider: str, status: int, body: Any, headers: Mapping[str, str]) -> ProviderError:
    """The typed error for an HTTP error answer."""
    code = error_code(body)
    reason = f"HTTP {status}" + (f" {code}" if code else "")
    if code in _PERMANENT_CODES:
        return PermanentError(provider, reason, status)
    if status in _RETRYABLE or status >= 500:
        return RetryableError(provider, reason, status, parse_retry_after(headers))
    return PermanentError(provider, reason, status)


class HttpClient:
    """One aiohttp session per provider: pooled connections, total and per-read timeouts."""

    def __init__(self, provider: str, timeout_s: float, max_concurrency: int) -> None:
        self._provider = provider
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_read=timeout_s)
        self._limit = max_concurrency
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._limit, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, headers=_JSON, json_serialize=_dumps
            )
        return self._session

    @asynccontextmanager
    async def post(
        self, url: str, payload: dict[str, Any], headers: Mapping[str, str]
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """POST JSON; yields a 2xx response, raises the typed error for anything else."""
        try:
            async with self._get_session().post(
                url, data=orjson.dumps(payload), headers=headers
            ) as response:
                if response.status >= 400:
                    raw = await response.read()
                    try:
                        body = orjson.loads(raw)
                    except orjson.JSONDecodeError:
                        body = None
                    raise classify(self._provider, response.status, body, response.headers)
                yield response
        except ProviderError:
            raise
        except TimeoutError:
            raise RetryableError(self._provider, "timed out") from None
        except aiohttp.ClientError as exc:
            raise RetryableError(self._provider, f"connection: {exc.__class__.__name__}") from None

    async def post_json(
        self, url: str, payload: dict[str, Any], headers: Mapping[str, str]
    ) -> dict[str, Any]:
        """POST JSON and return the JSON object answered (the non-streaming fast path)."""
        try:
            async with self._get_session().post(
                url, data=orjson.dumps(payload), headers=headers
            ) as response:
                raw = await response.read()
                status = response.status
                if status >= 400:
                    try:
                        body = orjson.loads(raw)
                    except orjson.JSONDecodeError:
                        body = None
                    raise classify(self._provider, status, body, response.headers)
        except ProviderError:
            raise
        except TimeoutError:
            raise RetryableError(self._provider, "timed out") from None
        except aiohttp.ClientError as exc:
            raise RetryableError(self._provider, f"connection: {exc.__class__.__name__}") from None
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise RetryableError(self._provider, "malformed JSON in the answer") from None
        if not isinstance(answer, dict):
            raise RetryableError(self._provider, "the answer is not a JSON object")
        return answer

    async def close(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None


_JSON = {"Content-Type": "application/json"}


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()
