"""Credentials for the page and API: HTTP basic passwords hashed with scrypt (salted, memory-hard,
in the standard library) and bearer tokens stored as SHA-256 (a random 256-bit token needs no
slow hash: there is nothing to guess)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
from collections import OrderedDict

from device.web.settings import AuthSettings

__all__ = ["Authenticator", "hash_password", "hash_token", "new_token", "verify_password"]

# scrypt cost: 2**14 x 8 x 1 takes ~16 MiB and tens of ms per check (OWASP's minimum).
_N, _R, _P = 2**14, 8, 1
_CACHE = 256


def hash_password(password: str, *, n: int = _N, r: int = _R, p: int = _P) -> str:
    """`scrypt$n$r$p$salt$hash`, the form `[auth] users` takes."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32)
    return f"scrypt${n}${r}${p}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    _, n, r, p, salt, digest = stored.split("$")
    got = hashlib.scrypt(
        password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=32,
        maxmem=256 * 1024 * 1024,
    )  # fmt: skip
    return hmac.compare_digest(got.hex(), digest)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """`sha256$hex`, the form `[auth] tokens` takes."""
    return "sha256$" + hashlib.sha256(token.encode()).hexdigest()


class Authenticator:
    """Checks an `Authorization` header. Successful basic logins are remembered (by a keyed
    digest, never the password) so a page's many requests pay for scrypt once."""

    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self._tokens = frozenset(settings.tokens)
        self._key = secrets.token_bytes(32)
        self._ok: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    def allows(self, header: str | None) -> bool:
        if not self.enabled:
            return True
        if not header:
            return False
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer":
            return hash_token(value.strip()) in self._tokens
        if scheme == "basic":
            return self._basic(value.strip())
        return False

    def _basic(self, value: str) -> bool:
        try:
            user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        stored = self.settings.users.get(user)
        if not sep or stored is None:
            return False
        mark = hmac.digest(self._key, f"{user}\0{password}".encode(), "sha256")
        with self._lock:
            if mark in self._ok:
                self._ok.move_to_end(mark)
                return True
        if not verify_password(password, stored):
            return False
        with self._lock:
            self._ok[mark] = None
            while len(self._ok) > _CACHE:
                self._ok.popitem(last=False)
        return True
