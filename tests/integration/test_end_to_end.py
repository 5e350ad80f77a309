"""The whole system over real websockets and HTTP: right bytes, right worker, clear errors."""

from __future__ import annotations

import http.client
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import openslide
import pytest
import websocket
from openslide.deepzoom import DeepZoomGenerator
from PIL import Image

from tests.helpers import System, WSClient, wait_for


def _expected(path: Path, level: int, col: int, row: int) -> Image.Image:
    dz = DeepZoomGenerator(openslide.OpenSlide(str(path)), 254, 1, True)
    return dz.get_tile(level, (col, row))


def _jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "jpeg", quality=75)
    return buf.getvalue()


def _collect(ws: WSClient, n: int) -> tuple[set[Any], dict[str, int]]:
    """Read ``n`` replies: the ids answered, and how many got each outcome ("ok" or the
    error code)."""
    ids: set[Any] = set()
    codes: dict[str, int] = {}
    for _ in range(n):
        header, _ = ws.recv()
        ids.add(header["id"])
        code = "ok" if header["ok"] else header["error"]["code"]
        codes[code] = codes.get(code, 0) + 1
    return ids, codes


TILES = [(12, 0, 0), (12, 11, 8), (9, 1, 1), (8, 0, 0), (0, 0, 0)]


@pytest.mark.parametrize("level,col,row", TILES)
def test_websocket_tile_bytes_equal_deepzoom(system: System, slide_root: Path,
                                            level: int, col: int, row: int) -> None:
    """JPEG bytes equal Pillow's encoding of DeepZoomGenerator.get_tile; PNG pixels equal."""
    ws = system.ws()
    try:
        header, data = ws.tile("a.tiff", level, col, row)
        assert header["ok"] is True and header["mime"] == "image/jpeg"
        expected = _expected(slide_root / "a.tiff", level, col, row)
        assert data == _jpeg(expected)
        header, data = ws.tile("a.tiff", level, col, row, fmt="png")
        assert header["mime"] == "image/png"
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), np.asarray(expected))
    finally:
        ws.close()


def test_http_deepzoom_matches_generator(system: System, slide_root: Path) -> None:
    dz = DeepZoomGenerator(openslide.OpenSlide(str(slide_root / "sub" / "b.tiff")), 254, 1, True)
    status, headers, body = system.get("/dz/sub/b.tiff.dzi")
    assert status == 200 and body.decode() == dz.get_dzi("jpeg")
    level = dz.level_count - 1
    status, headers, body = system.get(f"/dz/sub/b.tiff_files/{level}/2_3.jpeg")
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert body == _jpeg(dz.get_tile(level, (2, 3)))


def test_slide_list_and_info(system: System) -> None:
    status, _, body = system.get("/slides")
    paths = [s["path"] for s in json.loads(body)["slides"]]
    assert status == 200
    assert {"a.tiff", "c.tiff", "sub/b.tiff"} <= set(paths)
    assert "escape.tiff" not in paths  # symlink out of the root is not listed
    ws = system.ws()
    try:
        header, _ = ws.request({"op": "list"})
        assert [s["path"] for s in header["slides"]] == paths
        info, payload = ws.request({"op": "info", "slide": "a.tiff"})
        assert payload is None
        assert (info["width"], info["height"]) == (3000, 2200)
        assert info["tile_size"] == 254 and info["overlap"] == 1 and info["dz_levels"] == 13
        assert info["mpp_x"] == pytest.approx(0.25)
    finally:
        ws.close()


def test_many_in_flight_on_one_connection(system: System) -> None:
    """50 requests sent before reading any reply: every id answered exactly once."""
    ws = system.ws()
    try:
        ids = list(range(100, 150))
        for i in ids:
            ws.send({"id": i, "op": "tile", "slide": "c.tiff", "level": 10 + i % 2,
                     "col": i % 3, "row": i % 2})
        seen = []
        for _ in ids:
            header, data = ws.recv()
            assert header["ok"] is True, header
            assert data[:2] == b"\xff\xd8"
            seen.append(header["id"])
        assert sorted(seen) == ids
    finally:
        ws.close()


def test_requests_for_one_slide_stay_on_one_worker(system: System) -> None:
    """Sequential requests for a slide: one open (one miss), every later request a hit."""
    before = system.stats()["routing"]
    ws = system.ws()
    try:
        for i in range(20):
            header, _ = ws.tile("sub/b.tiff", 11, i % 8, i // 8)
            assert header["ok"] is True
    finally:
        ws.close()
    stats = system.stats()
    after = stats["routing"]
    assert after["affinity_misses"] - before["affinity_misses"] <= 1
    assert after["affinity_hits"] - before["affinity_hits"] >= 19
    holders = [w for w in stats["workers"] if "sub/b.tiff" in w["open_slides"]]
    assert len(holders) == 1
    assert holders[0]["reader_opens"] >= 1


BAD_REQUESTS = [
    ("{not json", "bad_request"),
    (json.dumps([1, 2]), "bad_request"),
    (json.dumps({"id": 1, "op": "explode"}), "unknown_op"),
    (json.dumps({"id": 1}), "bad_request"),
    (json.dumps({"id": 1, "op": "tile", "slide": "a.tiff", "level": "1", "col": 0, "row": 0}),
     "bad_request"),
    (json.dumps({"id": 1, "op": "tile", "slide": 5, "level": 1, "col": 0, "row": 0}),
     "bad_request"),
    (json.dumps({"id": 1, "op": "tile", "slide": "a.tiff", "level": 1, "col": -1, "row": 0}),
     "out_of_range"),
    (json.dumps({"id": 1, "op": "tile", "slide": "a.tiff", "level": 1, "col": 0, "row": 0,
                 "format": "gif"}), "bad_request"),
    (json.dumps({"id": 1, "op": "info", "slide": "../outside-secret.tiff"}), "forbidden"),
    (json.dumps({"id": 1, "op": "info", "slide": "/etc/passwd"}), "forbidden"),
    (json.dumps({"id": 1, "op": "info", "slide": "escape.tiff"}), "forbidden"),
    (json.dumps({"id": 1, "op": "info", "slide": "missing.tiff"}), "not_found"),
    (json.dumps({"id": 1, "op": "info", "slide": "notaslide.tiff"}), "bad_slide"),
    (json.dumps({"id": 1, "op": "tile", "slide": "truncated.tiff", "level": 12, "col": 5,
                 "row": 5}), "bad_slide"),
    (json.dumps({"id": 1, "op": "tile", "slide": "a.tiff", "level": 13, "col": 0, "row": 0}),
     "out_of_range"),
    (json.dumps({"id": 1, "op": "tile", "slide": "a.tiff", "level": 12, "col": 12, "row": 0}),
     "out_of_range"),
    (json.dumps({"id": 1, "op": "info", "slide": "a.tiff", "pad": "x" * 5000}), "too_large"),
]


@pytest.mark.parametrize("message,code", BAD_REQUESTS)
def test_bad_input_gets_a_clear_error_and_the_connection_lives(
        system: System, message: str, code: str) -> None:
    ws = system.ws()
    try:
        ws.send(message)
        header, payload = ws.recv()
        assert payload is None
        assert header["ok"] is False and header["error"]["code"] == code, header
        assert header["error"]["message"]
        ok, _ = ws.tile("c.tiff", 9, 0, 0)  # same connection still served
        assert ok["ok"] is True
    finally:
        ws.close()


def test_binary_message_is_rejected(system: System) -> None:
    ws = system.ws()
    try:
        ws.sock.send_binary(b"\x00\x01")
        header, _ = ws.recv()
        assert header["error"]["code"] == "bad_request"
    finally:
        ws.close()


def test_flood_is_bounded_and_every_request_answered(system: System) -> None:
    """300 requests at once: over the per-connection bound answers busy; none is lost."""
    ws = system.ws()
    other = system.ws()
    try:
        n = 300
        for i in range(n):
            ws.send({"id": i, "op": "tile", "slide": "a.tiff", "level": 11,
                     "col": i % 6, "row": i % 5})
        seen, codes = _collect(ws, n)
        assert seen == set(range(n))
        assert codes.get("busy", 0) > 0 and codes.get("ok", 0) >= 64, codes
        assert set(codes) <= {"ok", "busy"}, codes
        header, _ = other.tile("c.tiff", 9, 0, 0)  # another client kept being served
        assert header["ok"] is True
    finally:
        ws.close()
        other.close()


def test_http_tile_path_keeps_one_connection_alive_across_routes(system: System) -> None:
    """Tile GETs take the gateway's lean path, everything else the Tornado app; both
    share one keep-alive connection, and the lean path answers like the app would."""
    conn = http.client.HTTPConnection("127.0.0.1", system.port, timeout=15)
    try:
        def get(path: str, method: str = "GET") -> tuple[int, http.client.HTTPMessage, bytes]:
            conn.request(method, path)
            resp = conn.getresponse()
            return resp.status, resp.headers, resp.read()

        status, headers, first = get("/dz/sub/b.tiff_files/9/1_1.jpeg")
        assert status == 200 and first[:2] == b"\xff\xd8"
        assert headers["Content-Type"] == "image/jpeg"
        assert headers["Content-Length"] == str(len(first))
        assert headers["Cache-Control"] == "public, max-age=3600"
        assert headers["Access-Control-Allow-Origin"] == "*" and headers["Date"]
        assert headers["Server"] == "tilerouter"  # the lean path, not a RequestHandler
        status, headers, _ = get("/slides")
        assert status == 200 and headers["Server"].startswith("Tornado")
        assert get("/dz/sub%2Fb.tiff_files/9/1_1.jpeg")[2] == first  # percent-encoded path
        status, headers, body = get("/dz/a.tiff_files/12/99_0.jpeg")
        assert status == 404 and headers["Cache-Control"] == "no-store"
        assert json.loads(body)["error"]["code"] == "out_of_range"
        status, _, body = get("/dz/a.tiff_files/12/" + "9" * 5000 + "_0.jpeg")
        assert status == 400 and json.loads(body)["error"]["code"] == "bad_request"
        status, _, body = get("/dz/escape.tiff_files/9/0_0.jpeg")
        assert status == 403 and json.loads(body)["error"]["code"] == "forbidden"
        assert get("/dz/sub/b.tiff_files/9/1_1.jpeg", "HEAD")[0] == 405  # the app's answer
        status, headers, body = get("/dz/sub/b.tiff_files/9/1_1.jpg")
        assert (status, headers["Content-Type"], body) == (200, "image/jpeg", first)
    finally:
        conn.close()


@pytest.mark.parametrize("path,status", [
    ("/dz/missing.tiff.dzi", 404),
    ("/dz/notaslide.tiff.dzi", 422),
    ("/dz/escape.tiff.dzi", 403),
    ("/dz/a.tiff_files/99/0_0.jpeg", 404),
    ("/dz/a.tiff_files/12/0_0.gif", 404),
])
def test_http_errors_have_status_and_json(system: System, path: str, status: int) -> None:
    got, headers, body = system.get(path)
    assert got == status, body
    if "gif" not in path:
        assert json.loads(body)["ok"] is False


def test_cross_origin_websocket_is_refused(system: System) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as err:
        system.ws(origin="http://evil.example")
    assert err.value.status_code == 403


def test_stats_on_gateway_and_router_port(system: System) -> None:
    stats = system.stats()
    assert len(stats["workers"]) == 2
    worker = stats["workers"][0]
    for key in ("id", "pid", "host", "state", "inflight", "served", "open_slides", "tile_cache",
                "decoded_cache"):
        assert key in worker
    for key in ("requests", "replies", "errors", "timeouts", "waiting", "affinity_hits",
                "affinity_misses"):
        assert key in stats["routing"]
    import urllib.request

    def router_stats() -> dict:
        with urllib.request.urlopen(
                f"http://127.0.0.1:{system.settings.stats_port}/stats", timeout=5) as resp:
            return json.loads(resp.read())
    # the router publishes its HTTP snapshot once per heartbeat interval
    direct = wait_for(lambda: (d := router_stats()) and len(d["workers"]) == 2 and d, 5,
                      what="router stats port showing both workers")
    assert "routing" in direct


def test_identical_requests_cause_one_render(system: System) -> None:
    """Ten viewers' worth of the same tile at once: one request reaches the router;
    the rest are coalesced or served from the gateway's hot-tile cache."""
    before = system.stats()
    ws = system.ws()
    try:
        for i in range(10):
            ws.send({"id": i, "op": "tile", "slide": "a.tiff", "level": 12, "col": 7, "row": 7})
        bodies, ids = set(), set()
        for _ in range(10):
            header, data = ws.recv()
            assert header["ok"] is True and "rid" not in header
            bodies.add(data)
            ids.add(header["id"])
        assert len(bodies) == 1 and ids == set(range(10))
        header, data = ws.tile("a.tiff", 12, 7, 7)  # a hot tile, answered without the router
        assert header["ok"] is True and "rid" not in header and data in bodies
    finally:
        ws.close()
    after = system.stats()
    assert after["routing"]["requests"] - before["routing"]["requests"] == 1
    gw_before, gw_after = before["gateway"], after["gateway"]
    saved = (gw_after["coalesced"] + gw_after["hot_hits"]
             - gw_before["coalesced"] - gw_before["hot_hits"])
    assert saved == 9 + 1  # the nine duplicates, then the later hot request


def test_idle_workers_prefetch_neighbours_into_the_holders_cache(system: System) -> None:
    """After a tile is served, its neighbours are rendered while the worker is idle, so
    the next pan step is a tile-cache hit on the same worker."""
    before = system.stats()["routing"]["prefetches"]
    ws = system.ws()
    try:
        assert ws.tile("a.tiff", 12, 9, 6)[0]["ok"] is True
        # settled: ours prefetched and no prefetch left over from earlier tests running
        # (a holder busy with one would send the next request to the other worker)
        last: list[tuple[int, bool]] = []

        def settled() -> bool:
            stats = system.stats()
            now = (stats["routing"]["prefetches"],
                   all(w["inflight"] == 0 for w in stats["workers"]))
            last.append(now)
            return now[0] >= before + 4 and now[1] and last[-2:] == [now, now]
        wait_for(settled, 10, 0.1, what="neighbours prefetched, workers settled")
        header, data = ws.tile("a.tiff", 12, 10, 6)
        assert header["ok"] is True and header.get("cached") is True
        assert data[:2] == b"\xff\xd8"
    finally:
        ws.close()


def test_pipelined_hot_tiles_never_meet_busy(system: System) -> None:
    """A viewer keeping a window of requests in flight on hot tiles is never refused:
    answered-at-once tiles must not hold in-flight slots after their bytes left."""
    ws = system.ws()
    try:
        assert ws.tile("c.tiff", 8, 0, 0)[0]["ok"] is True  # now hot in the gateway
        window, total = 8, 600
        sent = 0
        for _ in range(window):
            ws.send({"id": sent, "op": "tile", "slide": "c.tiff", "level": 8, "col": 0,
                     "row": 0})
            sent += 1
        codes: dict[str, int] = {}
        for _ in range(total):
            header, _ = ws.recv()
            code = "ok" if header["ok"] else header["error"]["code"]
            codes[code] = codes.get(code, 0) + 1
            if sent < total:
                ws.send({"id": sent, "op": "tile", "slide": "c.tiff", "level": 8, "col": 0,
                         "row": 0})
                sent += 1
        assert codes == {"ok": total}
    finally:
        ws.close()


@pytest.mark.parametrize("fresh_system", [{"max_inflight_per_connection": 4, "workers": 1}],
                         indirect=True)
def test_a_client_that_stops_reading_meets_busy(fresh_system: System) -> None:
    """Hot tiles are answered at once; a client that sends without reading makes its
    unread replies pile up, and past the bound it gets ``busy`` instead of more bytes
    buffered in the gateway. Every request is still answered."""
    ws = fresh_system.ws(rcvbuf=32 * 1024)  # else the kernel would hold all the replies
    try:
        assert ws.tile("a.tiff", 12, 5, 5)[0]["ok"] is True  # hot from now on
        total = 1500  # ~15 MB of replies
        for i in range(total):
            ws.send({"id": i, "op": "tile", "slide": "a.tiff", "level": 12, "col": 5,
                     "row": 5})
        wait_for(lambda: fresh_system.stats()["gateway"].get("rejected", 0) > 0, 15,
                 what="the gateway refusing a connection that does not read")
        ids, codes = _collect(ws, total)
        assert ids == set(range(total))
        assert codes.get("busy", 0) > 0 and codes.get("ok", 0) > 0
        assert set(codes) <= {"ok", "busy"}
    finally:
        ws.close()


def test_rendered_tiles_count_decoded_stored_tiles(fresh_system: System) -> None:
    """A full-resolution 254/1 tile is cut from stored tiles: the worker's decoded-tile
    cache counts the decodes in /stats (the routing benchmark reads them there). A system
    of its own, so no earlier test has cached the tile."""
    system = fresh_system

    def decoded() -> int:
        return sum(w["decoded_cache"]["hits"] + w["decoded_cache"]["misses"]
                   for w in system.stats()["workers"])
    assert decoded() == 0
    ws = system.ws()
    try:
        header, data = ws.tile("c.tiff", 11, 2, 1)  # 1200x900: level 11 is full resolution
        assert header["ok"] and data and not header.get("cached")
    finally:
        ws.close()
    wait_for(lambda: decoded() >= 4, 10, what="decoded-tile counts in /stats")
