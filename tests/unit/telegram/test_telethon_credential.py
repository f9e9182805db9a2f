"""The Telethon credential blob: versioned encoding, round trip, refusal of anything else."""

from __future__ import annotations

import os

import pytest
from telethon.sessions import MemorySession

from vibee.telegram.telethon_credential import (
    AUTH_KEY_BYTES,
    CredentialError,
    TelethonCredential,
    apply_credential,
    credential_of,
)


def test_round_trip_and_layout() -> None:
    key = os.urandom(AUTH_KEY_BYTES)
    cred = TelethonCredential(4, "149.154.167.91", 443, key, user_id=123456789)
    blob = cred.encode()
    assert blob[0] == 1 and len(blob) == 15 + len("149.154.167.91") + 256
    assert blob.endswith(key)
    back = TelethonCredential.decode(blob)
    assert back == cred and back.authorized
    assert not TelethonCredential(4, "::1", 443, key).authorized


def test_ipv6_and_negative_ids_survive() -> None:
    cred = TelethonCredential(2, "2001:67c:4e8:f002::a", 443, os.urandom(256), user_id=-5)
    assert TelethonCredential.decode(cred.encode()) == cred


def test_repr_never_shows_the_key() -> None:
    key = bytes(range(256))
    text = repr(TelethonCredential(2, "1.2.3.4", 443, key, 1))
    assert "auth_key" not in text and key.hex()[:16] not in text and str(key[:8]) not in text


@pytest.mark.parametrize(
    "blob",
    [b"", b"\x02" + bytes(300), bytes(10), b"\x01" + bytes(14), b"\x01" + bytes(400)],
    ids=["empty", "version2", "short", "head-only", "long"],
)
def test_garbage_is_refused_without_echoing_it(blob: bytes) -> None:
    with pytest.raises(CredentialError) as refused:
        TelethonCredential.decode(blob)
    assert blob.hex()[:20] not in str(refused.value) or not blob


def test_a_sim_credential_is_refused() -> None:
    with pytest.raises(CredentialError):
        TelethonCredential.decode(bytes.fromhex("ab" * 16))


def test_encode_refuses_a_short_key() -> None:
    with pytest.raises(CredentialError):
        TelethonCredential(2, "1.2.3.4", 443, b"short").encode()


def test_to_and_from_a_telethon_session() -> None:
    cred = TelethonCredential(5, "91.108.56.130", 443, os.urandom(256), user_id=77)
    session = MemorySession()
    assert credential_of(session, 0) is None  # no auth key yet
    apply_credential(session, cred)
    assert (session.dc_id, session.server_address, session.port) == (5, "91.108.56.130", 443)
    assert session.auth_key.key == cred.auth_key
    assert credential_of(session, 77) == cred
