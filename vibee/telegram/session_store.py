"""Sealing Telegram credentials at rest, and re-sealing them when the keyring rotates.

A credential (the sim's token, or Telethon's dc + auth key) is encrypted with the primary
key of the ``session_keys`` keyring, AES-256-GCM, bound to its row by the associated data
``telegram_session:<id>``: a sealed credential copied onto another row does not open.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from vibee.secrets import DecryptError, Keyring
from vibee.store import Executor, sessions

log = logging.getLogger("vibee.telegram.session_store")


def associated_data(session_id: int) -> bytes:
    """What binds a sealed credential to its row."""
    return f"telegram_session:{session_id}".encode()


def seal(keyring: Keyring, session_id: int, credential: bytes) -> tuple[bytes, str]:
    """(ciphertext, key id) for storing ``credential`` in row ``session_id``."""
    return keyring.encrypt(credential, associated_data(session_id)), keyring.primary_id


def unseal(keyring: Keyring, session_id: int, sealed: bytes) -> bytes:
    """The credential stored in row ``session_id``. Raises DecryptError."""
    return keyring.decrypt(sealed, associated_data(session_id))


@dataclass(frozen=True, slots=True)
class RotationReport:
    """What ``vibee keys rotate`` did."""

    rotated: int
    current: int
    unreadable: list[int]


async def reseal_all(db: Executor, keyring: Keyring) -> RotationReport:
    """Re-encrypt every credential not sealed with the primary key; safe while VIBEE runs
    (a row changed meanwhile is left alone: it was just written with the current key)."""
    rotated = current = 0
    unreadable: list[int] = []
    for session_id, sealed, key_id in await sessions.sealed_credentials_all_users(db):
        if key_id == keyring.primary_id:
            current += 1
            continue
        try:
            plain = unseal(keyring, session_id, sealed)
        except DecryptError:
            unreadable.append(session_id)
            log.error("credential cannot be decrypted", extra={"session_id": session_id})
            continue
        new, new_id = seal(keyring, session_id, plain)
        if await sessions.replace_credential(db, session_id, sealed, new, new_id):
            rotated += 1
        else:
            current += 1
    return RotationReport(rotated, current, unreadable)
