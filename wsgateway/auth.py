"""Optional gateway authentication: a static bearer token or HMAC-signed tokens.

Off unless ``auth_token`` or ``auth_secret`` is set. A token may arrive as
``Authorization: Bearer <t>``, a ``token`` query argument (browsers cannot set
headers on a websocket upgrade) or the ``tilerouter_token`` cookie, which the
viewer page sets when opened as ``/?token=<t>``.

Signed token: ``base64url(json{"exp": unix_seconds, "paths": ["folder/", ...]})``
``+ "." + base64url(hmac_sha256(secret, first_part))``. ``paths`` (optional)
limits access to slides under those prefixes; without it every slide is allowed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from config.errors import BadRequest, Forbidden, Unauthorized

COOKIE = "tilerouter_token"


@dataclass(frozen=True)
class Grant:
    """What an authenticated caller may read: every slide, or those under ``prefixes``."""

    prefixes: tuple[str, ...] | None = None

    def allows(self, slide: str) -> bool:
        if self.prefixes is None:
            return True
        return any(slide.startswith(p) if p.endswith("/") else slide == p or
                   slide.startswith(p + "/") for p in self.prefixes)

    def check(self, slide: str) -> None:
        if not self.allows(slide):
            raise Forbidden(f"token does not grant access to {slide!r}")


OPEN = Grant()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_token(secret: str, ttl: float = 3600.0, paths: Iterable[str] | None = None,
               now: float | None = None) -> str:
    claims: dict[str, object] = {"exp": int((now or time.time()) + ttl)}
    if paths is not None:
        claims["paths"] = list(paths)
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    mac = hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


class Authorizer:
    def __init__(self, token: str = "", secret: str = "") -> None:
        self._token = token
        self._secret = secret

    @property
    def enabled(self) -> bool:
        return bool(self._token or self._secret)

    def check(self, presented: str | None, now: float | None = None) -> Grant:
        """The caller's grant, or Unauthorized (missing, wrong, expired or malformed)."""
        if not self.enabled:
            return OPEN
        if not presented:
            raise Unauthorized("authentication required: send a token")
        if self._token and hmac.compare_digest(presented.encode(), self._token.encode()):
            return OPEN
        if self._secret:
            return self._check_signed(presented, time.time() if now is None else now)
        raise Unauthorized("invalid token")

    def grant_for(self, headers: Any, query_token: str | None, cookie_token: str | None
                  ) -> Grant:
        """The grant of an HTTP caller's token (``token_from`` order); Unauthorized when
        refused, BadRequest when the credentials cannot even be read."""
        if not self.enabled:
            return OPEN
        try:
            presented = token_from(headers, query_token, cookie_token)
        except Exception:
            raise BadRequest("unreadable credentials") from None
        return self.check(presented)

    def _check_signed(self, presented: str, now: float) -> Grant:
        body, _, mac = presented.partition(".")
        expected = hmac.new(self._secret.encode(), body.encode(), hashlib.sha256).digest()
        try:
            valid = hmac.compare_digest(_unb64(mac), expected)
            claims = json.loads(_unb64(body)) if valid else None
        except (ValueError, UnicodeDecodeError):
            raise Unauthorized("malformed token") from None
        if not valid or not isinstance(claims, dict):
            raise Unauthorized("invalid token")
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or exp < now:
            raise Unauthorized("token expired")
        paths = claims.get("paths")
        if paths is None:
            return OPEN
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise Unauthorized("malformed token paths")
        return Grant(tuple(paths))


def token_from(headers: dict[str, str] | object, query_token: str | None,
               cookie_token: str | None) -> str | None:
    """Bearer header first, then query argument, then cookie."""
    auth = headers.get("Authorization", "") if hasattr(headers, "get") else ""
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return query_token or cookie_token
