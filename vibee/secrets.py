"""Secrets: where they come from, keyrings with rotation, AES-256-GCM for data at rest.

Exceptions::

    SecretError              a secret is missing, unreadable or malformed (names the secret,
    │                        never its value)
    └── DecryptError         ciphertext tampered with, bound to other data, or key unknown

A secret named ``NAME`` is read, first found wins, from:

1. ``$CREDENTIALS_DIRECTORY/NAME`` (systemd ``LoadCredential=``),
2. the environment variable ``VIBEE_NAME`` (upper case),
3. the ``*_file`` path in the config (for example ``security.jwt_keys_file``),
4. ``<state>/secrets/NAME``, which :func:`ensure_generated` writes once (mode 0600) when
   VIBEE runs on its embedded database and nothing else provided the secret.

Keyrings (``jwt_keys``, ``session_keys``) hold one key per line, ``<id>:<base64 key>``.
The first line is the primary key: it encrypts and signs; every key decrypts and verifies,
so old data stays readable while keys rotate.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets as _random
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vibee.config import Config

GENERATED_SECRETS = ("jwt_keys", "session_keys", "admin_token")
KEYRING_SECRETS = ("jwt_keys", "session_keys")
_NONCE_BYTES = 12
_FORMAT_VERSION = 1


class SecretError(Exception):
    """A secret is missing, unreadable or malformed. The message never holds its value."""


class DecryptError(SecretError):
    """Ciphertext was tampered with, bound to other associated data, or its key is unknown."""


@dataclass(frozen=True, slots=True)
class Secret:
    """A secret value and where it came from. ``repr`` and ``str`` never show the value."""

    name: str
    value: str = field(repr=False)
    source: str

    def __str__(self) -> str:
        return "***"


def secret_file_keys(config: Config) -> dict[str, Path | None]:
    """Every known secret name mapped to the ``*_file`` path the config gives for it."""
    keys: dict[str, Path | None] = {
        "telegram_api_hash": config.telegram.api_hash_file,
        "jwt_keys": config.security.jwt_keys_file,
        "session_keys": config.security.session_keys_file,
        "admin_token": config.admin.token_file,
        "database_password": config.database.password_file,
        "tracing_headers": config.tracing.headers_file,
        "redis_password": config.redis.password_file,
    }
    for name, provider in config.ai.providers.items():
        if provider.kind != "canned":
            keys[f"ai_{name}_api_key"] = provider.api_key_file
    return keys


class SecretStore:
    """Resolves secrets by name from the four sources, in order."""

    def __init__(
        self, config: Config, state_dir: Path, environ: Mapping[str, str] | None = None
    ) -> None:
        self._env = os.environ if environ is None else environ
        self._files = secret_file_keys(config)
        self._generated_dir = state_dir / "secrets"

    @property
    def names(self) -> list[str]:
        """Every secret name this configuration knows."""
        return list(self._files)

    def get(self, name: str) -> Secret | None:
        """The secret, or None when no source has it. Raises SecretError when unreadable."""
        creds = self._env.get("CREDENTIALS_DIRECTORY")
        if creds:
            found = _read(Path(creds) / name, name, "credentials directory")
            if found is not None:
                return found
        env_name = "VIBEE_" + name.upper()
        if self._env.get(env_name):
            return Secret(name, self._env[env_name].strip(), f"environment {env_name}")
        configured = self._files.get(name)
        if configured is not None:
            found = _read(configured, name, f"file {configured}")
            if found is None:
                raise SecretError(f"{name}: the configured file {configured} does not exist")
            return found
        return _read(self._generated_dir / name, name, "generated in the state directory")

    def require(self, name: str) -> Secret:
        """The secret, or SecretError naming the ways to provide it."""
        found = self.get(name)
        if found is None:
            raise SecretError(
                f"{name}: not provided; put it in $CREDENTIALS_DIRECTORY/{name}, "
                f"the environment variable VIBEE_{name.upper()}, or a *_file key in the config"
            )
        return found

    def ensure_generated(self) -> list[str]:
        """Generate, once, every generable secret no source provides. Returns their names."""
        made = []
        for name in GENERATED_SECRETS:
            if self.get(name) is not None:
                continue
            value = new_keyring_text() if name in KEYRING_SECRETS else _random.token_urlsafe(32)
            _write_private(self._generated_dir / name, value)
            made.append(name)
        return made

    def add_key(self, name: str) -> str | None:
        """Put a new primary key at the top of keyring ``name`` when it lives in a file
        VIBEE may write (the configured ``*_file`` or the generated one). Returns the new
        key id, or None when the keyring comes from systemd credentials or the environment
        (then the operator adds the key there)."""
        secret = self.require(name)
        if secret.source == "credentials directory" or secret.source.startswith("environment"):
            return None
        path = self._files.get(name) or self._generated_dir / name
        text = new_keyring_text(secret.value)
        _write_private(path, text)
        return Keyring.parse(name, text).primary_id

    def keyring(self, name: str) -> Keyring:
        """The keyring stored in the secret ``name``."""
        return Keyring.parse(name, self.require(name).value)


def _read(path: Path, name: str, source: str) -> Secret | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretError(f"{name}: cannot read {path}: {exc.__class__.__name__}") from None
    value = text.strip()
    if not value:
        raise SecretError(f"{name}: {path} is empty")
    return Secret(name, value, source)


def _write_private(path: Path, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (value + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)


def new_key_id() -> str:
    """A fresh key id: the UTC date and a random suffix, e.g. ``k20261125-3f9a``."""
    return time.strftime("k%Y%m%d-", time.gmtime()) + _random.token_hex(2)


def new_keyring_text(existing: str = "") -> str:
    """Keyring text with a new primary key first, followed by ``existing`` keys."""
    line = f"{new_key_id()}:{base64.b64encode(_random.token_bytes(32)).decode()}"
    return "\n".join([line, *(ln for ln in existing.splitlines() if ln.strip())])


@dataclass(frozen=True, slots=True)
class Keyring:
    """Named 256-bit keys; the first is primary. ``repr`` shows ids only."""

    name: str
    keys: tuple[tuple[str, bytes], ...] = field(repr=False)

    @classmethod
    def parse(cls, name: str, text: str) -> Keyring:
        """Parse ``<id>:<base64 32-byte key>`` lines. Raises SecretError naming the line."""
        keys: list[tuple[str, bytes]] = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            key_id, sep, encoded = line.strip().partition(":")
            if not sep or not key_id:
                raise SecretError(f"{name}: line {number} is not '<id>:<base64 key>'")
            try:
                key = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise SecretError(f"{name}: line {number} is not valid base64") from None
            if len(key) != 32:
                raise SecretError(f"{name}: key {key_id!r} must be 32 bytes, not {len(key)}")
            if any(key_id == known for known, _ in keys):
                raise SecretError(f"{name}: key id {key_id!r} appears twice")
            keys.append((key_id, key))
        if not keys:
            raise SecretError(f"{name}: the keyring holds no key")
        return cls(name, tuple(keys))

    @property
    def primary_id(self) -> str:
        """The id of the key that encrypts and signs."""
        return self.keys[0][0]

    @property
    def ids(self) -> list[str]:
        """Every key id, primary first."""
        return [key_id for key_id, _ in self.keys]

    def key(self, key_id: str) -> bytes:
        """The key with this id. Raises DecryptError when unknown."""
        for known, key in self.keys:
            if known == key_id:
                return key
        raise DecryptError(f"{self.name}: unknown key id {key_id!r}")

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        return iter(self.keys)

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> bytes:
        """AES-256-GCM with the primary key, bound to ``associated_data`` (e.g. the row id).

        Layout: version byte, key-id length byte, key id, 12-byte nonce, ciphertext+tag.
        """
        key_id, key = self.keys[0]
        raw_id = key_id.encode()
        nonce = _random.token_bytes(_NONCE_BYTES)
        sealed = AESGCM(key).encrypt(nonce, plaintext, associated_data)
        return bytes([_FORMAT_VERSION, len(raw_id)]) + raw_id + nonce + sealed

    def decrypt(self, blob: bytes, associated_data: bytes) -> bytes:
        """Open what :meth:`encrypt` sealed. Raises DecryptError on any mismatch."""
        if len(blob) < 2 or blob[0] != _FORMAT_VERSION:
            raise DecryptError(f"{self.name}: not a sealed value (unknown format)")
        id_len = blob[1]
        head = 2 + id_len
        key_id = blob[2:head].decode(errors="replace")
        nonce, sealed = blob[head : head + _NONCE_BYTES], blob[head + _NONCE_BYTES :]
        try:
            return AESGCM(self.key(key_id)).decrypt(nonce, sealed, associated_data)
        except InvalidTag:
            raise DecryptError(
                f"{self.name}: ciphertext does not verify (tampered, or bound to other data)"
            ) from None

    def key_id_of(self, blob: bytes) -> str:
        """The id of the key that sealed ``blob`` (to find rows that need re-encryption)."""
        if len(blob) < 2 or blob[0] != _FORMAT_VERSION:
            raise DecryptError(f"{self.name}: not a sealed value (unknown format)")
        return blob[2 : 2 + blob[1]].decode(errors="replace")
