"""Login through TelethonGateway over a fake sender: code (finished on another gateway),
2FA with a real SRP check verified server-side, QR (scanned, expired, recreated)."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import secrets
from datetime import timedelta
from typing import Any

import pytest
from telethon import errors, functions
from telethon import password as srp
from telethon.tl import types

from tests.unit.telegram.test_telethon_fakes import (
    ME,
    NOW,
    FakeSender,
    gateway,
    install,
    me_user,
    patch_telethon_time,
)
from vibee.telegram.gateway import (
    Authorized,
    LoginError,
    PasswordInvalid,
    PasswordRequired,
    PhoneCodeInvalid,
    PhoneNumberInvalid,
)
from vibee.telegram.telethon_credential import TelethonCredential
from vibee.telegram.telethon_gateway import TelethonGateway

PHONE = "+447700900123"
SIGN_IN = functions.auth.SignInRequest
EXPORT = functions.auth.ExportLoginTokenRequest


async def fresh() -> tuple[TelethonGateway, FakeSender]:
    """A gateway with a new auth key, connected, not signed in."""
    gw = gateway()
    sender = install(gw, me=None)
    assert await gw.connect() is None
    return gw, sender


def sign_in_answers(sender: FakeSender, code: str, code_hash: str) -> None:
    """Telegram's code check: the right code with the right hash signs in."""

    def answer(req: Any) -> Any:
        if req.phone_code_hash != code_hash:
            return errors.PhoneCodeExpiredError(req)
        if req.phone_code != code:
            return errors.PhoneCodeInvalidError(req)
        sender.me = me_user()
        return types.auth.Authorization(user=me_user())

    sender.handlers[SIGN_IN] = answer


async def test_send_code_returns_the_hash_to_store() -> None:
    gw, sender = await fresh()
    sender.handlers[functions.auth.SendCodeRequest] = lambda req: types.auth.SentCode(
        type=types.auth.SentCodeTypeApp(length=6), phone_code_hash="hash-from-telegram"
    )
    state = await gw.send_code(PHONE)
    assert (state.phone, state.phone_code_hash, state.step, state.code_length) == (
        PHONE, "hash-from-telegram", "code_sent", 6,
    )  # fmt: skip
    (request,) = sender.sent(functions.auth.SendCodeRequest)
    assert request.phone_number == "447700900123"
    await gw.disconnect()


async def test_bad_phone() -> None:
    gw, sender = await fresh()
    sender.handlers[functions.auth.SendCodeRequest] = errors.PhoneNumberInvalidError
    with pytest.raises(PhoneNumberInvalid) as bad:
        await gw.send_code("12")
    assert "phone number" in bad.value.message
    await gw.disconnect()


async def test_a_login_started_elsewhere_is_finished_with_the_stored_hash() -> None:
    first, sender = await fresh()
    sender.handlers[functions.auth.SendCodeRequest] = lambda req: types.auth.SentCode(
        type=types.auth.SentCodeTypeApp(length=5), phone_code_hash="H-1"
    )
    stored = (await first.send_code(PHONE)).to_json()
    blob = first.credential
    assert blob is not None
    await first.disconnect()

    second = gateway(blob)  # another instance: only what was stored
    other = install(second, me=None)
    assert await second.connect() is None
    assert second.client._phone_code_hash == {}  # Telethon's own memory of it is empty
    sign_in_answers(other, "24680", "H-1")
    with pytest.raises(PhoneCodeInvalid):
        await second.sign_in(stored["phone"], "13579", stored["phone_code_hash"])
    result = await second.sign_in(stored["phone"], " 24680 ", stored["phone_code_hash"])
    assert isinstance(result, Authorized) and result.user.id == ME
    requests = other.sent(SIGN_IN)
    assert [(r.phone_number, r.phone_code_hash, r.phone_code) for r in requests] == [
        ("447700900123", "H-1", "13579"),
        ("447700900123", "H-1", "24680"),
    ]
    decoded = TelethonCredential.decode(result.credential)
    assert decoded.user_id == ME and decoded.auth_key == TelethonCredential.decode(blob).auth_key
    assert (await second.me()).id == ME
    await second.disconnect()


async def test_sign_up_required_is_a_clear_error() -> None:
    gw, sender = await fresh()
    sender.handlers[SIGN_IN] = lambda req: types.auth.AuthorizationSignUpRequired()
    with pytest.raises(Exception, match="no Telegram account") as refused:
        await gw.sign_in(PHONE, "12345", "h")
    assert getattr(refused.value, "code", "") == "PHONE_NUMBER_UNOCCUPIED"
    await gw.disconnect()


# --- two-step verification: a real SRP exchange ---------------------------------------------

_GOOD_PRIME = bytes(
    next(
        c
        for c in srp.check_prime_and_good.__code__.co_consts
        if isinstance(c, tuple) and len(c) == 256
    )
)


class SrpServer:
    """Telegram's side of the 2FA password check (SRP-2048, as in tdesktop/Telethon)."""

    def __init__(self, password: str) -> None:
        self.algo = types.PasswordKdfAlgoSHA256SHA256PBKDF2HMACSHA512iter100000SHA256ModPow(
            salt1=os.urandom(16), salt2=os.urandom(16), g=3, p=_GOOD_PRIME
        )
        self.p = int.from_bytes(_GOOD_PRIME, "big")
        x = int.from_bytes(srp.compute_hash(self.algo, password), "big")
        self.v = pow(3, x, self.p)
        self.b = secrets.randbits(2048)
        self.k = int.from_bytes(srp.sha256(_GOOD_PRIME, srp.big_num_for_hash(3)), "big")
        self.B = (self.k * self.v + pow(3, self.b, self.p)) % self.p
        self.srp_id = 987654321

    def settings(self, hint: str = "the usual") -> Any:
        return types.account.Password(
            new_algo=types.PasswordKdfAlgoUnknown(),
            new_secure_algo=types.SecurePasswordKdfAlgoUnknown(),
            secure_random=os.urandom(32), has_password=True, current_algo=self.algo,
            srp_B=srp.big_num_for_hash(self.B), srp_id=self.srp_id, hint=hint,
        )  # fmt: skip

    def verifies(self, check: Any) -> bool:
        a_bytes, b_bytes = check.A, srp.big_num_for_hash(self.B)
        u = int.from_bytes(srp.sha256(a_bytes, b_bytes), "big")
        a = int.from_bytes(a_bytes, "big")
        s = pow(a * pow(self.v, u, self.p) % self.p, self.b, self.p)
        m1 = srp.sha256(
            srp.xor(srp.sha256(_GOOD_PRIME), srp.sha256(srp.big_num_for_hash(3))),
            srp.sha256(self.algo.salt1),
            srp.sha256(self.algo.salt2),
            a_bytes,
            b_bytes,
            srp.sha256(srp.big_num_for_hash(s)),
        )
        return bool(check.srp_id == self.srp_id and check.M1 == m1)


def password_answers(sender: FakeSender, server: SrpServer) -> None:
    sender.handlers[functions.account.GetPasswordRequest] = lambda req: server.settings()

    def check(req: Any) -> Any:
        if not server.verifies(req.password):
            return errors.PasswordHashInvalidError(req)
        sender.me = me_user()
        return types.auth.Authorization(user=me_user())

    sender.handlers[functions.auth.CheckPasswordRequest] = check


async def test_two_step_verification() -> None:
    gw, sender = await fresh()
    sender.handlers[SIGN_IN] = errors.SessionPasswordNeededError
    password_answers(sender, SrpServer("correct horse"))
    needed = await gw.sign_in(PHONE, "12345", "h")
    assert needed == PasswordRequired("the usual")
    with pytest.raises(PasswordInvalid):
        await gw.check_password("battery staple")
    authorized = await gw.check_password("correct horse")
    assert authorized.user.id == ME and TelethonCredential.decode(authorized.credential).authorized
    await gw.disconnect()


async def test_the_password_step_on_another_instance() -> None:
    first, sender = await fresh()
    sender.handlers[SIGN_IN] = errors.SessionPasswordNeededError
    sender.handlers[functions.account.GetPasswordRequest] = lambda req: SrpServer("x").settings()
    assert isinstance(await first.sign_in(PHONE, "12345", "h"), PasswordRequired)
    blob = first.credential
    assert blob is not None
    await first.disconnect()

    second = gateway(blob)
    other = install(second, me=None)
    other.handlers[functions.users.GetUsersRequest] = errors.SessionPasswordNeededError
    assert await second.connect() is None  # connected, waiting for the password
    server = SrpServer("pw")
    password_answers(other, server)
    other.handlers.pop(functions.users.GetUsersRequest)
    assert (await second.check_password("pw")).user.id == ME
    await second.disconnect()


# --- QR ----------------------------------------------------------------------------------------


def login_token(token: bytes, seconds: float) -> Any:
    return types.auth.LoginToken(
        expires=NOW.now(NOW.tzinfo) + timedelta(seconds=seconds), token=token
    )


async def test_qr_login_scanned_between_waits() -> None:
    gw, sender = await fresh()
    sender.handlers[EXPORT] = lambda req: login_token(b"token-1", 30)
    qr = await gw.qr_start()
    assert qr.url == "tg://login?token=dG9rZW4tMQ"
    assert await gw.qr_wait(0.01) is None  # not scanned yet
    assert await gw.qr_start() == qr  # still valid: the same code
    sender.handlers[EXPORT] = lambda req: types.auth.LoginTokenSuccess(
        authorization=types.auth.Authorization(user=me_user())
    )
    sender.push(types.UpdateShort(update=types.UpdateLoginToken(), date=NOW))  # scanned
    for _ in range(50):
        await asyncio.sleep(0)  # scanned while nobody is in qr_wait
    result = await gw.qr_wait(10)
    assert isinstance(result, Authorized) and result.user.id == ME
    assert len(sender.sent(EXPORT)) == 2
    await gw.disconnect()


async def test_an_expired_qr_code_is_recreated() -> None:
    gw, sender = await fresh()
    tokens = iter([login_token(b"old", -1), login_token(b"new", 30)])
    sender.handlers[EXPORT] = lambda req: next(tokens)
    first = await gw.qr_start()
    assert await gw.qr_wait(10) is None  # expired
    second = await gw.qr_start()
    assert second.url != first.url and second.url.endswith("bmV3")
    assert len(sender.sent(EXPORT)) == 2
    await gw.disconnect()


async def test_qr_with_two_step_verification() -> None:
    gw, sender = await fresh()
    sender.handlers[EXPORT] = lambda req: login_token(b"t", 30)
    await gw.qr_start()
    sender.handlers[EXPORT] = errors.SessionPasswordNeededError
    sender.handlers[functions.account.GetPasswordRequest] = lambda req: SrpServer("p").settings(
        "hint!"
    )
    sender.push(types.UpdateShort(update=types.UpdateLoginToken(), date=NOW))
    assert await gw.qr_wait(10) == PasswordRequired("hint!")
    await gw.disconnect()


async def test_qr_wait_needs_a_started_login() -> None:
    gw, _ = await fresh()
    with pytest.raises(LoginError, match="start one first"):
        await gw.qr_wait(1)
    await gw.disconnect()


async def test_no_secret_reaches_a_log_line(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """api_hash, phone_code_hash, code, password and auth key: in no record, at any level."""
    caplog.set_level(logging.DEBUG)
    patch_telethon_time(monkeypatch)
    first, sender = await fresh()
    sender.handlers[functions.auth.SendCodeRequest] = lambda req: types.auth.SentCode(
        type=types.auth.SentCodeTypeApp(length=5), phone_code_hash="secret-code-hash-42"
    )
    await first.send_code(PHONE)
    sender.handlers[SIGN_IN] = errors.SessionPasswordNeededError
    password_answers(sender, SrpServer("pw-very-secret"))
    await first.sign_in(PHONE, "24680", "secret-code-hash-42")
    with pytest.raises(PasswordInvalid):
        await first.check_password("wrong-secret-pw")
    authorized = await first.check_password("pw-very-secret")
    first.client.session.process_entities(types.contacts.ResolvedPeer(None, [me_user()], []))
    sender.handlers[functions.messages.SendMessageRequest] = errors.RandomIdDuplicateError
    with pytest.raises(Exception):  # noqa: B017
        await first.send_message(ME, "x", random_id=1)  # Telethon warns, retries
    sender.handlers[functions.messages.SendMessageRequest] = errors.SessionRevokedError
    with pytest.raises(Exception):  # noqa: B017  (any: the point is what was logged)
        await first.send_message(ME, "x", random_id=1)
    await first.disconnect()
    key = TelethonCredential.decode(authorized.credential).auth_key
    text = "\n".join(f"{r.getMessage()} {r.exc_text or ''} {r.__dict__}" for r in caplog.records)
    assert {r.name.split(".")[0] for r in caplog.records} == {"vibee", "telethon"}
    for secret in ("0123456789abcdef0123456789abcdef", "secret-code-hash-42", "24680",
                   "pw-very-secret", "wrong-secret-pw", key.hex()[:32], repr(key)[:40],
                   base64.b64encode(key).decode()[:32]):  # fmt: skip
        assert secret not in text, secret
