"""JSON logs with context; secrets and auth keys redacted even when passed by mistake."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from vibee.obs import logging as vlog


@pytest.fixture
def capture() -> Iterator[tuple[io.StringIO, logging.Logger]]:
    stream = io.StringIO()
    vlog.configure("debug", "json", stream)
    yield stream, logging.getLogger("vibee.test")
    logging.getLogger().handlers.clear()


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_one_json_object_per_line_with_context(capture: tuple[io.StringIO, logging.Logger]) -> None:
    stream, log = capture
    with vlog.bind(trace_id="t-1", session_id=5):
        with vlog.bind(user_id=9):
            log.info("hello %s", "world", extra={"chat": 3})
        log.warning("second")
    log.error("outside")
    first, second, third = lines(stream)
    assert first["msg"] == "hello world" and first["level"] == "info"
    assert first["logger"] == "vibee.test"
    assert (first["trace_id"], first["session_id"], first["user_id"], first["chat"]) == (
        "t-1",
        5,
        9,
        3,
    )
    assert str(first["ts"]).endswith("Z")
    assert "user_id" not in second and second["session_id"] == 5
    assert "trace_id" not in third


def test_exceptions_carry_their_traceback(capture: tuple[io.StringIO, logging.Logger]) -> None:
    stream, log = capture
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    (record,) = lines(stream)
    assert "ValueError: boom" in str(record["exc"]) and "Traceback" in str(record["exc"])


def test_registered_secrets_never_appear(capture: tuple[io.StringIO, logging.Logger]) -> None:
    stream, log = capture
    vlog.register_secret("k1:c2VjcmV0LWtleS1tYXRlcmlhbA==\nk0:b2xkZXIta2V5LW1hdGVyaWFs")
    vlog.register_secret("sup3r-s3cret-token")
    log.info("token is sup3r-s3cret-token", extra={"note": "old key b2xkZXIta2V5LW1hdGVyaWFs"})
    try:
        raise RuntimeError("bad key c2VjcmV0LWtleS1tYXRlcmlhbA==")
    except RuntimeError:
        log.exception("oops %s", "sup3r-s3cret-token")
    out = stream.getvalue()
    for secret in (
        "sup3r-s3cret-token",
        "c2VjcmV0LWtleS1tYXRlcmlhbA==",
        "b2xkZXIta2V5LW1hdGVyaWFs",
    ):
        assert secret not in out
    assert out.count("***") >= 4


def test_auth_keys_and_secret_shapes_redacted(capture: tuple[io.StringIO, logging.Logger]) -> None:
    stream, log = capture
    auth_key = bytes(range(256))
    string_session = "1" + "A" * 351 + "="
    log.info("key %r", auth_key, extra={"auth_key": auth_key, "blob": auth_key})
    log.info("session %s", string_session)
    log.info("header Authorization: Bearer abc.def.ghi-123456")
    log.info("openai key sk-proj-abcdefghijklmnop1234")
    log.info("login", extra={"password": "pw-123456", "phone_code_hash": "abcdef123"})
    out = stream.getvalue()
    assert "\\x00\\x01\\x02" not in out and "AAAAAAAAAAAAAAAAAAAA" not in out
    assert "abc.def.ghi" not in out and "sk-proj-abcdef" not in out
    assert "pw-123456" not in out and "abcdef123" not in out
    records = lines(stream)
    assert records[0]["auth_key"] == "***" and records[0]["blob"] == "<256 bytes redacted>"
    assert records[0]["msg"] == "key <256 bytes redacted>"
    assert records[2]["msg"] == "header Authorization: Bearer ***"


def test_text_format_for_people() -> None:
    stream = io.StringIO()
    vlog.configure("info", "text", stream)
    try:
        logging.getLogger("vibee.x").info("ready", extra={"port": 1})
        logging.getLogger("vibee.x").debug("hidden")
    finally:
        logging.getLogger().handlers.clear()
    (line,) = stream.getvalue().splitlines()
    assert line.endswith("info    vibee.x: ready port=1")
