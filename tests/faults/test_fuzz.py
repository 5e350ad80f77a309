"""Fuzzed input at every door: websocket text, HTTP paths, raw ZeroMQ frames at both
router sockets. Every input gets a clear answer or is dropped and logged; no process
crashes and real clients keep being served."""

from __future__ import annotations

import json
import urllib.parse

import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router import protocol
from tests.helpers import System, wait_for

KNOWN_CODES = {"bad_request", "unknown_op", "too_large", "forbidden", "not_found",
               "out_of_range", "bad_slide", "busy", "rate_limited"}
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids,
                                                               max_size=4),
    max_leaves=12)
requests = st.fixed_dictionaries(
    {"id": st.integers(0, 10**6)},
    optional={"op": st.sampled_from(["tile", "info", "list", "associated", "x", ""]) | json_values,
              "slide": st.sampled_from(["a.tiff", "../a.tiff", "/etc/passwd", "sub/b.tiff",
                                        "notaslide.tiff", "nope", "a.tiff/..", ""]) | json_values,
              "level": st.integers(-3, 40) | json_values, "col": st.integers(-3, 300),
              "row": st.integers(-3, 300), "format": st.sampled_from(["jpeg", "png", "gif"]),
              "name": st.sampled_from(["thumbnail", "label", "x" * 200]) | json_values,
              "size": st.integers(-5, 5000) | json_values})


def test_fuzzed_websocket_messages_each_get_one_clear_reply(system: System) -> None:
    ws = system.ws()
    try:
        @FUZZ
        @given(st.one_of(requests.map(json.dumps), st.text(max_size=300)))
        def check(message: str) -> None:
            ws.send(message)
            header, payload = ws.recv()
            if header.get("ok"):
                return
            assert header["error"]["code"] in KNOWN_CODES, header
            assert header["error"]["message"]
        check()
        assert ws.tile("a.tiff", 10, 0, 0)[0]["ok"] is True
    finally:
        ws.close()


def test_fuzzed_http_paths_never_500(system: System) -> None:
    @FUZZ
    @given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=60))
    def check(junk: str) -> None:
        quoted = urllib.parse.quote(junk, safe="/._")
        for path in (f"/dz/{quoted}.dzi", f"/dz/a.tiff_files/{quoted}.jpeg",
                     f"/assoc/thumbnail/{quoted}", f"/info/{quoted}"):
            status, _, body = system.get(path)
            assert status in (200, 400, 403, 404, 413, 422), (path, status, body[:200])
    check()


frames = st.lists(st.binary(max_size=64), max_size=6)
structured = st.tuples(st.sampled_from([protocol.VERSION, b"TR0", b""]),
                       st.sampled_from(list(protocol.COMMANDS) + [b"\x09", b""]),
                       st.one_of(st.binary(max_size=40),
                                 json_values.map(lambda v: json.dumps(v).encode()))
                       ).map(list)


def test_fuzzed_zeromq_frames_do_not_hurt_the_router(system: System) -> None:
    ctx = zmq.Context.instance()
    socks = []
    for endpoint in (system.settings.frontend, system.settings.backend):
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        socks.append(sock)
    before = system.stats()["routing"]["malformed"]
    sent = {"n": 0}
    try:
        @FUZZ
        @given(st.one_of(frames, structured), st.booleans())
        def check(msg: list[bytes], to_backend: bool) -> None:
            if msg:
                socks[to_backend].send_multipart(msg)
                sent["n"] += 1
        check()
        # wrong frame counts and a huge frame, explicitly
        for sock in socks:
            sock.send_multipart([protocol.VERSION])
            sock.send_multipart([protocol.VERSION, protocol.REQUEST, b"{}", b"x", b"y"])
            sock.send_multipart([protocol.VERSION, protocol.REQUEST, b"{" * (1 << 20)])
            sock.send_multipart([protocol.VERSION, protocol.REPLY,
                                 json.dumps({"tid": 999999, "r": {"ok": True}}).encode(),
                                 b"\0" * (8 << 20)])
        wait_for(lambda: system.stats()["routing"]["malformed"] > before, 10,
                 what="router to count malformed messages")
        ws = system.ws()
        try:
            header, _ = ws.tile("c.tiff", 9, 1, 0)
            assert header["ok"] is True, header
        finally:
            ws.close()
        assert len(system.stats()["workers"]) >= 2  # real workers still registered
    finally:
        for sock in socks:
            sock.close(linger=0)
