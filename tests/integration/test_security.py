"""Authentication, per-folder grants, Origin policy, rate limits and TLS on a real gateway."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import websocket

from tests.helpers import System
from wsgateway.auth import sign_token

SECRET = "hmac-secret-for-tests"
STATIC = "static-token-for-tests"


@pytest.fixture(scope="module")
def secured(slide_root: Path) -> Iterator[System]:
    sysm = System(slide_root, workers=1, auth_token=STATIC, auth_secret=SECRET,
                  allowed_origins="http://viewer.example", max_requests_per_second=50)
    try:
        sysm.start()
        yield sysm
    finally:
        sysm.stop()


def test_http_needs_a_token(secured: System) -> None:
    status, _, body = secured.get("/slides", token=None)
    assert status == 401 and json.loads(body)["error"]["code"] == "unauthorized"
    assert secured.get("/slides", token="wrong")[0] == 401
    assert secured.get("/slides")[0] == 200  # static bearer token
    assert secured.get("/healthz", token=None)[0] == 200  # health checks stay open
    assert secured.get("/slides?token=" + STATIC, token=None)[0] == 200


def test_websocket_upgrade_needs_a_token(secured: System) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as err:
        secured.ws(token=None)
    assert err.value.status_code == 401
    ws = secured.ws(token=None, query="?token=" + STATIC)
    try:
        assert ws.tile("c.tiff", 8, 0, 0)[0]["ok"] is True
    finally:
        ws.close()


def test_signed_token_limits_slides_to_its_folders(secured: System) -> None:
    token = sign_token(SECRET, ttl=60, paths=["sub/"])
    status, _, body = secured.get("/slides", token=token)
    assert status == 200
    assert [s["path"] for s in json.loads(body)["slides"]] == ["sub/b.tiff"]
    assert secured.get("/dz/sub/b.tiff.dzi", token=token)[0] == 200
    status, _, body = secured.get("/dz/a.tiff.dzi", token=token)
    assert status == 403 and json.loads(body)["error"]["code"] == "forbidden"
    ws = secured.ws(token=token)
    try:
        header, _ = ws.request({"op": "info", "slide": "a.tiff"})
        assert header["error"]["code"] == "forbidden"
        assert ws.tile("sub/b.tiff", 8, 0, 0)[0]["ok"] is True
    finally:
        ws.close()


def test_http_tiles_need_a_token_and_a_grant(secured: System) -> None:
    """The lean tile path checks header, query and cookie tokens and folder grants."""
    tile = "/dz/sub/b.tiff_files/8/0_0.jpeg"
    status, _, body = secured.get(tile, token=None)
    assert status == 401 and json.loads(body)["error"]["code"] == "unauthorized"
    assert secured.get(tile, token="wrong")[0] == 401
    assert secured.get(tile)[0] == 200
    assert secured.get(tile + "?token=" + STATIC, token=None)[0] == 200
    cookie = {"Cookie": "tilerouter_token=" + STATIC}
    assert secured.get(tile, token=None, headers=cookie)[0] == 200
    grant = sign_token(SECRET, ttl=60, paths=["sub/"])
    assert secured.get(tile, token=grant)[0] == 200
    status, _, body = secured.get("/dz/a.tiff_files/8/0_0.jpeg", token=grant)
    assert status == 403 and json.loads(body)["error"]["code"] == "forbidden"


def test_expired_or_tampered_signed_token_is_refused(secured: System) -> None:
    expired = sign_token(SECRET, ttl=-10)
    assert secured.get("/slides", token=expired)[0] == 401
    good = sign_token(SECRET, ttl=60, paths=["sub/"])
    body, mac = good.split(".")
    forged = sign_token("other-secret", ttl=60).split(".")[0] + "." + mac
    assert secured.get("/slides", token=forged)[0] == 401


def test_viewer_page_sets_a_cookie_the_websocket_accepts(secured: System) -> None:
    token = sign_token(SECRET, ttl=60)
    status, headers, _ = secured.get("/?token=" + token, token=None)
    assert status == 200
    cookie = headers["Set-Cookie"].split(";")[0]
    assert cookie.startswith("tilerouter_token=") and "HttpOnly" in headers["Set-Cookie"]
    ws = secured.ws(token=None, cookie=cookie)
    try:
        assert ws.tile("c.tiff", 8, 0, 0)[0]["ok"] is True
    finally:
        ws.close()
    assert secured.get("/?token=bogus", token=None)[0] == 401


def test_configured_origin_is_allowed_others_refused(secured: System) -> None:
    secured.ws(origin="http://viewer.example").close()
    with pytest.raises(websocket.WebSocketBadStatusException) as err:
        secured.ws(origin="http://evil.example")
    assert err.value.status_code == 403


def test_request_rate_is_limited_per_connection(secured: System) -> None:
    ws = secured.ws()
    other = secured.ws()
    try:
        n = 200
        for i in range(n):
            ws.send({"id": i, "op": "list"})
        codes = []
        for _ in range(n):
            header, _ = ws.recv()
            codes.append("ok" if header["ok"] else header["error"]["code"])
        assert codes.count("rate_limited") > 0 and codes.count("ok") >= 50
        assert set(codes) <= {"ok", "rate_limited", "busy"}
        assert other.request({"op": "list"})[0]["ok"] is True  # other connections unaffected
    finally:
        ws.close()
        other.close()


def test_tls_gateway(slide_root: Path, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    sysm = System(slide_root, workers=1, tls_cert=str(cert), tls_key=str(key))
    try:
        sysm.start()
        assert sysm.base.startswith("https://")
        assert sysm.get("/slides")[0] == 200
        ws = sysm.ws()
        try:
            assert ws.tile("c.tiff", 8, 0, 0)[0]["ok"] is True
        finally:
            ws.close()
    finally:
        sysm.stop()
