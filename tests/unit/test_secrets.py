"""Secret sources, generated secrets, keyrings and AES-256-GCM bound to its row."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vibee.config import Config
from vibee.secrets import DecryptError, Keyring, SecretError, SecretStore, new_keyring_text


def config_with(**security: str) -> Config:
    return Config.model_validate({"security": security})


def test_precedence_credentials_then_env_then_file(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "admin_token").write_text("from-credentials\n")
    token_file = tmp_path / "token"
    token_file.write_text("from-file")
    config = Config.model_validate({"admin": {"token_file": str(token_file)}})
    env = {"CREDENTIALS_DIRECTORY": str(creds), "VIBEE_ADMIN_TOKEN": "from-env"}

    store = SecretStore(config, tmp_path / "state", env)
    secret = store.require("admin_token")
    assert (secret.value, secret.source) == ("from-credentials", "credentials directory")

    (creds / "admin_token").unlink()
    assert SecretStore(config, tmp_path, env).require("admin_token").value == "from-env"

    del env["VIBEE_ADMIN_TOKEN"]
    assert SecretStore(config, tmp_path, env).require("admin_token").value == "from-file"


def test_configured_file_that_is_missing_is_an_error(tmp_path: Path) -> None:
    config = config_with(jwt_keys_file=str(tmp_path / "nope"))
    with pytest.raises(SecretError, match="jwt_keys: the configured file .* does not exist"):
        SecretStore(config, tmp_path, {}).get("jwt_keys")


def test_missing_secret_names_every_way_to_provide_it(tmp_path: Path) -> None:
    with pytest.raises(SecretError) as info:
        SecretStore(Config(), tmp_path, {}).require("telegram_api_hash")
    message = str(info.value)
    assert "CREDENTIALS_DIRECTORY/telegram_api_hash" in message
    assert "VIBEE_TELEGRAM_API_HASH" in message


def test_provider_keys_are_named_after_the_provider(tmp_path: Path) -> None:
    store = SecretStore(Config(), tmp_path, {"VIBEE_AI_OPENROUTER_API_KEY": "sk-or-1"})
    assert "ai_openrouter_api_key" in store.names and "ai_canned_api_key" not in store.names
    assert store.require("ai_openrouter_api_key").value == "sk-or-1"


def test_generated_once_with_mode_0600_and_reused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = SecretStore(Config(), state, {})
    assert sorted(first.ensure_generated()) == ["admin_token", "jwt_keys", "session_keys"]
    for name in ("admin_token", "jwt_keys", "session_keys"):
        path = state / "secrets" / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((state / "secrets").stat().st_mode) == 0o700
    token = first.require("admin_token").value
    ring = first.keyring("session_keys")

    second = SecretStore(Config(), state, {})  # "the next start"
    assert second.ensure_generated() == []
    assert second.require("admin_token").value == token
    assert second.keyring("session_keys").ids == ring.ids


def test_generation_skips_secrets_provided_elsewhere(tmp_path: Path) -> None:
    store = SecretStore(Config(), tmp_path, {"VIBEE_ADMIN_TOKEN": "mine"})
    assert "admin_token" not in store.ensure_generated()
    assert not (tmp_path / "secrets" / "admin_token").exists()


def test_secret_repr_never_shows_the_value(tmp_path: Path) -> None:
    secret = SecretStore(Config(), tmp_path, {"VIBEE_ADMIN_TOKEN": "hunter2-xyz"}).get(
        "admin_token"
    )
    assert secret is not None
    assert "hunter2" not in repr(secret) and "hunter2" not in str(secret)
    ring = Keyring.parse("k", new_keyring_text())
    assert base64.b64encode(ring.keys[0][1]).decode() not in repr(ring)


def test_rotation_old_ciphertext_still_decrypts() -> None:
    old = Keyring.parse("session_keys", new_keyring_text())
    sealed = old.encrypt(b"auth key bytes", b"session:42")
    rotated_text = new_keyring_text(
        "\n".join(f"{i}:{base64.b64encode(k).decode()}" for i, k in old)
    )
    rotated = Keyring.parse("session_keys", rotated_text)
    assert rotated.primary_id != old.primary_id and old.primary_id in rotated.ids
    assert rotated.decrypt(sealed, b"session:42") == b"auth key bytes"
    assert rotated.key_id_of(sealed) == old.primary_id
    resealed = rotated.encrypt(b"auth key bytes", b"session:42")
    assert rotated.key_id_of(resealed) == rotated.primary_id
    with pytest.raises(DecryptError, match="unknown key id"):
        old.decrypt(resealed, b"session:42")


def test_wrong_associated_data_is_rejected() -> None:
    ring = Keyring.parse("session_keys", new_keyring_text())
    sealed = ring.encrypt(b"secret", b"session:1")
    with pytest.raises(DecryptError, match="does not verify"):
        ring.decrypt(sealed, b"session:2")


@given(position=st.integers(min_value=0), flip=st.integers(min_value=1, max_value=255))
def test_any_tampered_byte_is_rejected(position: int, flip: int) -> None:
    ring = Keyring.parse("k", "a:" + base64.b64encode(b"\x01" * 32).decode())
    sealed = bytearray(ring.encrypt(b"payload", b"row:7"))
    sealed[position % len(sealed)] ^= flip
    with pytest.raises(DecryptError):
        ring.decrypt(bytes(sealed), b"row:7")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "holds no key"),
        ("nocolon", "line 1 is not '<id>:<base64 key>'"),
        ("a:!!!", "line 1 is not valid base64"),
        ("a:" + base64.b64encode(b"short").decode(), "must be 32 bytes, not 5"),
        ("a:{k}\na:{k}".format(k=base64.b64encode(b"x" * 32).decode()), "appears twice"),
    ],
)
def test_bad_keyrings_are_named(text: str, message: str) -> None:
    with pytest.raises(SecretError, match=message):
        Keyring.parse("jwt_keys", text)
