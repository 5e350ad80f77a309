"""Token checks without a server: static, signed, expired, tampered, folder grants."""

from __future__ import annotations

import pytest

from config.errors import Forbidden, Unauthorized
from wsgateway.auth import OPEN, Authorizer, Grant, sign_token
from wsgateway.ratelimit import TokenBucket


def test_disabled_authorizer_grants_everything() -> None:
    assert Authorizer().check(None) is OPEN


def test_static_token() -> None:
    auth = Authorizer(token="abc")
    assert auth.check("abc") is OPEN
    for bad in (None, "", "abd", "abc "):
        with pytest.raises(Unauthorized):
            auth.check(bad)


def test_signed_token_round_trip_expiry_and_paths() -> None:
    auth = Authorizer(secret="k")
    assert auth.check(sign_token("k", ttl=10, now=1000), now=1005) is OPEN
    with pytest.raises(Unauthorized, match="expired"):
        auth.check(sign_token("k", ttl=10, now=1000), now=1011)
    grant = auth.check(sign_token("k", ttl=10, paths=["a/", "b.tiff"], now=0), now=1)
    assert grant.allows("a/x.tiff") and grant.allows("b.tiff") and grant.allows("b.tiff/y")
    assert not grant.allows("ab/x.tiff") and not grant.allows("b.tiffx")
    with pytest.raises(Forbidden):
        grant.check("c.tiff")


@pytest.mark.parametrize("token", ["x", "x.y", "....", sign_token("other", 10, now=2e9)])
def test_malformed_or_foreign_tokens_are_unauthorized(token: str) -> None:
    with pytest.raises(Unauthorized):
        Authorizer(secret="k").check(token)


def test_grant_without_prefixes_allows_all() -> None:
    assert Grant().allows("anything/at/all.svs")


def test_token_bucket_rate_and_burst() -> None:
    bucket = TokenBucket(rate=10, burst=5)
    t0 = bucket._stamp
    assert [bucket.take(t0) for _ in range(6)] == [True] * 5 + [False]
    assert bucket.take(t0 + 0.1) is True  # one token refilled after 1/rate seconds
    assert bucket.take(t0 + 0.1) is False
