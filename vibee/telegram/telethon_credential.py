"""The Telethon credential: the opaque blob :attr:`TelethonGateway.credential` returns.

It holds what a Telethon client needs to reconnect as the same authorization: the data
centre (id, server address, port), the 256-byte MTProto auth key, and the account's user
id once the key is authorized (0 before: a login in progress). The caller seals it
(``vibee.telegram.session_store.seal``: AES-256-GCM, ``telegram_session:<id>`` as
associated data) and gives it back to the gateway's constructor; ``TelethonSession``
writes the same sealed blob to ``telegram_sessions.credential`` when the key changes.

Layout, big-endian, version 1 (15 + n + 256 bytes)::

    offset  size  field
    0       1     version (1)
    1       1     flags (reserved, 0)
    2       2     dc_id
    4       2     port
    6       8     user_id (signed; 0 = not authorized yet)
    14      1     n = length of the server address
    15      n     server address (ASCII: an IPv4 or IPv6 literal)
    15+n    256   auth key

Exceptions::

    CredentialError   the blob is not a Telethon credential (never shows its bytes)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from telethon.crypto import AuthKey

VERSION = 1
AUTH_KEY_BYTES = 256
_HEAD = struct.Struct(">BBHHqB")


class CredentialError(ValueError):
    """The credential cannot be decoded; the message never contains its bytes."""


@dataclass(frozen=True, slots=True)
class TelethonCredential:
    """A decoded credential. ``repr`` never shows the auth key."""

    dc_id: int
    server_address: str
    port: int
    auth_key: bytes = field(repr=False)
    user_id: int = 0

    @property
    def authorized(self) -> bool:
        """Whether the key was signed in (a login finished with it)."""
        return self.user_id != 0

    def encode(self) -> bytes:
        """The versioned binary form (see the module docstring)."""
        address = self.server_address.encode("ascii")
        if len(self.auth_key) != AUTH_KEY_BYTES:
            raise CredentialError(f"the auth key must be {AUTH_KEY_BYTES} bytes")
        if len(address) > 255 or not 0 < self.port < 65536 or not 0 <= self.dc_id < 65536:
            raise CredentialError("the data centre address does not fit a credential")
        head = _HEAD.pack(VERSION, 0, self.dc_id, self.port, self.user_id, len(address))
        return head + address + self.auth_key

    @classmethod
    def decode(cls, blob: bytes) -> TelethonCredential:
        """The inverse of :meth:`encode`. Raises CredentialError."""
        if len(blob) < _HEAD.size or blob[0] != VERSION:
            raise CredentialError("not a Telethon credential (unknown format or version)")
        _, _, dc_id, port, user_id, n = _HEAD.unpack_from(blob)
        if len(blob) != _HEAD.size + n + AUTH_KEY_BYTES:
            raise CredentialError("not a Telethon credential (wrong length)")
        try:
            address = blob[_HEAD.size : _HEAD.size + n].decode("ascii")
        except UnicodeDecodeError:
            raise CredentialError("not a Telethon credential (bad server address)") from None
        return cls(dc_id, address, port, bytes(blob[_HEAD.size + n :]), user_id)


def credential_of(session: Any, user_id: int) -> TelethonCredential | None:
    """The credential a Telethon session holds now (None while it has no auth key)."""
    key = getattr(session.auth_key, "key", None)
    if not key or not session.server_address or not session.port:
        return None
    return TelethonCredential(
        int(session.dc_id), str(session.server_address), int(session.port), bytes(key), user_id
    )


def apply_credential(session: Any, credential: TelethonCredential) -> None:
    """Load ``credential`` into a Telethon session (before a client is built on it)."""
    session.set_dc(credential.dc_id, credential.server_address, credential.port)
    session.auth_key = AuthKey(credential.auth_key)
