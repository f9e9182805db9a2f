"""Access tokens: HS256 JWTs signed with the primary key of the ``jwt_keys`` keyring.

Exceptions::

    TokenRejected        the token does not verify; ``reason`` says why in a few words
                         (malformed, unsupported algorithm, unknown key id, bad signature,
                         expired, not an access token) and never holds the token

The ``kid`` header names the key: any key of the ring verifies, so tokens signed before a
rotation stay valid until they expire. Only ``HS256`` is accepted (``alg=none`` and every
other algorithm are refused before any key is looked up). Claims: ``sub`` (the user id),
``typ`` = ``access``, ``gen`` (the user's token generation; a password change moves it on
and so revokes older tokens), ``iat``, ``exp``, ``iss`` = ``vibee``.

Verified tokens are remembered (keyed by a digest of the token, until they expire, at most
``cache_size`` of them), so a client presenting the same token again costs a hash and a
dict lookup instead of a signature check.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import jwt

from vibee.secrets import Keyring

ALGORITHM = "HS256"
ISSUER = "vibee"
ACCESS = "access"
_MAX_TOKEN_CHARS = 4096


class TokenRejected(Exception):
    """The access token does not verify; ``reason`` is safe to show to the client."""

    def __init__(self, reason: str) -> None:
        """A rejection for ``reason``."""
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified access token says."""

    user_id: int
    generation: int
    expires_at: float


class AccessTokens:
    """Issues and verifies access tokens for one keyring."""

    def __init__(
        self,
        keyring: Keyring,
        ttl_s: int,
        clock: Callable[[], float] = time.time,
        cache_size: int = 10_000,
    ) -> None:
        """Tokens valid for ``ttl_s`` seconds, signed with ``keyring``'s primary key."""
        if ttl_s < 1:
            raise ValueError("ttl_s must be at least 1")
        self._primary_id = keyring.primary_id
        self._keys = dict(keyring.keys)
        self._ttl = ttl_s
        self._clock = clock
        self._cache: dict[bytes, Claims] = {}
        self._cache_size = max(1, cache_size)

    @property
    def ttl_s(self) -> int:
        """How long a new token is valid, in seconds."""
        return self._ttl

    def issue(self, user_id: int, generation: int) -> str:
        """A new access token for ``user_id`` in token generation ``generation``."""
        now = int(self._clock())
        payload = {
            "sub": str(user_id),
            "typ": ACCESS,
            "gen": generation,
            "iss": ISSUER,
            "iat": now,
            "exp": now + self._ttl,
        }
        return jwt.encode(
            payload,
            self._keys[self._primary_id],
            algorithm=ALGORITHM,
            headers={"kid": self._primary_id},
        )

    def verify(self, token: str) -> Claims:
        """The token's claims. Raises TokenRejected."""
        if len(token) > _MAX_TOKEN_CHARS:
            raise TokenRejected("malformed token")
        key = hashlib.blake2b(token.encode(), digest_size=16).digest()
        now = self._clock()
        claims = self._cache.get(key)
        if claims is not None:
            if claims.expires_at > now:
                return claims
            del self._cache[key]
            raise TokenRejected("the token has expired")
        claims = self._verify(token, now)
        if len(self._cache) >= self._cache_size:
            self._evict(now)
        self._cache[key] = claims
        return claims

    def _evict(self, now: float) -> None:
        expired = [k for k, c in self._cache.items() if c.expires_at <= now]
        for k in expired:
            del self._cache[k]
        if len(self._cache) >= self._cache_size:
            for k in list(self._cache)[: max(1, self._cache_size // 10)]:
                del self._cache[k]

    def _verify(self, token: str, now: float) -> Claims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise TokenRejected("malformed token") from None
        if header.get("alg") != ALGORITHM:
            raise TokenRejected("unsupported signing algorithm")
        kid = header.get("kid")
        secret = self._keys.get(kid) if isinstance(kid, str) else None
        if secret is None:
            raise TokenRejected("unknown signing key")
        try:
            payload = jwt.decode(
                token,
                secret,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                options={"require": ["sub", "typ", "gen", "iat", "exp", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRejected("the token has expired") from None
        except jwt.InvalidSignatureError:
            raise TokenRejected("the signature does not verify") from None
        except jwt.InvalidTokenError:
            raise TokenRejected("malformed token") from None
        if payload.get("typ") != ACCESS:
            raise TokenRejected("not an access token")
        sub, gen, exp = payload.get("sub"), payload.get("gen"), payload.get("exp")
        if not (isinstance(sub, str) and sub.isascii() and sub.isdigit() and len(sub) < 19):
            raise TokenRejected("malformed token")
        if type(gen) is not int or not isinstance(exp, int | float) or exp <= now:
            raise TokenRejected("malformed token")
        return Claims(int(sub), gen, float(exp))
