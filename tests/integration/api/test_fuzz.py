"""Fuzz the API from its own OpenAPI document with schemathesis: valid and invalid
requests for every operation, authenticated, asserting no 5xx and that every answer
matches the document (status, content type, headers, body schema).

schemathesis calls the API synchronously, so the API runs on its own event loop in a
thread, on this test's database.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vibee.api.app import build_api_app
from vibee.api.context import ApiSettings
from vibee.api.tiers import TierLimits, Tiers
from vibee.coord.local import LocalRateLimiter
from vibee.secrets import Keyring, new_keyring_text
from vibee.store import Executor
from vibee.telegram.login import LoginFlow
from vibee.telegram.qr import QrLogins
from vibee.telegram.sim_gateway import SimGateway

schemathesis = pytest.importorskip("schemathesis")
requests = pytest.importorskip("requests")  # installed with schemathesis
EXAMPLES_PER_OPERATION = 100


class ApiThread:
    """The API served by its own event loop in a thread."""

    def __init__(self, db_url: str, sim_url: str) -> None:
        self._db_url = db_url
        self._sim_url = sim_url
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.base_url = ""
        self._thread = threading.Thread(target=self._main, name="api-under-fuzz", daemon=True)

    def __enter__(self) -> ApiThread:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None or not self.base_url:
            raise RuntimeError(f"the API did not start: {self._error!r}")
        return self

    def __exit__(self, *_: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to the test thread
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        pool = await asyncpg.create_pool(self._db_url, min_size=1, max_size=4)
        keyring = Keyring.parse("jwt_keys", new_keyring_text())
        api_settings = ApiSettings(
            user_cache_ttl_s=0,
            auth_per_minute_per_ip=1_000_000,
            token_per_minute_per_ip=1_000_000,
            max_body_bytes=4096,
            tiers=Tiers(TierLimits(api_per_minute=1_000_000)),
        )
        session_keys = Keyring.parse("session_keys", new_keyring_text())

        def gateway(_id: int, credential: bytes | None) -> SimGateway:
            return SimGateway(self._sim_url, credential)

        def login(db: Executor) -> LoginFlow:
            return LoginFlow(db, session_keys, gateway)

        qr = QrLogins(login, lambda: pool, gateway, timeout_s=30)
        await qr.start()
        app = build_api_app(
            api_settings, lambda: pool, keyring, LocalRateLimiter(), login=login, qr=lambda: qr
        )
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()
            await qr.stop(5)
            await pool.close()


@pytest.fixture
def served(db_url: str, sim_url: str) -> Iterator[ApiThread]:
    with ApiThread(db_url, sim_url) as api:
        yield api


def token_for(base_url: str) -> str:
    response = requests.post(
        f"{base_url}/api/v1/auth/register",
        json={"username": "fuzzer", "password": "fuzzing is fun 123"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    token: str = response.json()["tokens"]["access_token"]
    return token


def test_fuzz_the_api_from_its_openapi_document(served: ApiThread) -> None:
    from schemathesis import GenerationMode, checks

    base = served.base_url
    doc: dict[str, Any] = requests.get(f"{base}/api/v1/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(doc)
    schema.validate()  # against the OpenAPI 3.1 meta-schema
    headers = {"Authorization": f"Bearer {token_for(base)}"}
    chosen = [
        checks.not_a_server_error,
        checks.status_code_conformance,
        checks.content_type_conformance,
        checks.response_headers_conformance,
        checks.response_schema_conformance,
    ]
    session = requests.Session()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == len([m for ops in doc["paths"].values() for m in ops])

    seen: dict[str, set[int]] = {}
    for operation in operations:
        strategy = (
            st.one_of(
                operation.as_strategy(GenerationMode.POSITIVE),
                operation.as_strategy(GenerationMode.NEGATIVE),
            )
            if "requestBody" in doc["paths"][operation.path][operation.method]
            else (operation.as_strategy(GenerationMode.POSITIVE))
        )

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def run(case: Any) -> None:
            response = case.call(base_url=base, session=session, headers=headers)
            assert response.status_code < 500, (case.path, case.body, response.text)
            case.validate_response(response, checks=chosen, headers=headers)
            seen.setdefault(f"{case.method} {case.path}", set()).add(response.status_code)

        run()
    assert all(status < 500 for statuses in seen.values() for status in statuses)
    # the fuzzing got past validation and authentication, and reached validation errors
    assert {201, 422} <= seen["POST /api/v1/auth/register"]
    assert 200 in seen["GET /api/v1/usage"] and 200 in seen["PATCH /api/v1/users/me"]
