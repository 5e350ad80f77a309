"""Elastic worker pool (``--workers MIN:MAX``), real processes: a burst makes the launcher
start workers up to MAX; once quiet, the extra workers exit after ``worker_idle_exit``, the
router drops them (and their slides) as workers that left, not died, and no request of
the burst got an error."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from tests.helpers import System, pid_alive, running, wait_for

SLIDES = ("a.tiff", "sub/b.tiff", "c.tiff")
GRIDS = ((12, 12, 9), (11, 8, 6), (11, 5, 4))  # full-resolution level, columns, rows


def _burst(sysm: System, stop: threading.Event, results: dict[str, Any],
           inflight: int = 24, most: int = 20000) -> None:
    """Keep ``inflight`` tile requests open on one websocket until ``stop``; each reply
    sends the next, so the router always has work waiting."""
    ws = sysm.ws()
    answered: set[int] = set()
    errors: list[Any] = []
    sent = 0

    def send(n: int) -> None:
        # distinct tiles (the gateway joins identical requests in flight)
        slide, (level, cols, rows), k = SLIDES[n % 3], GRIDS[n % 3], n // 3
        ws.send({"id": n, "op": "tile", "slide": slide, "level": level,
                 "col": k % cols, "row": k // cols % rows})
    try:
        for sent in range(inflight):
            send(sent)
        sent = inflight
        while len(answered) < sent:  # bounded: at most ``most`` requests
            header, _ = ws.recv()
            answered.add(header["id"])
            if not header["ok"]:
                errors.append(header["error"])
            if not stop.is_set() and sent < most:
                send(sent)
                sent += 1
    finally:
        ws.close()
        results.update(sent=sent, answered=answered, errors=errors)


def test_pool_grows_under_a_burst_and_shrinks_when_quiet(slide_root: Path) -> None:
    # every request reopens its slide (one open reader per worker, slides in turn,
    # round-robin), and an open costs 50 ms: one worker cannot keep up with 24 in flight
    sysm = System(slide_root, workers=1, workers_max=3, scale_up_wait=0.2,
                  worker_idle_exit=1.5, open_latency=0.05, reader_cache_size=1,
                  policy="round-robin", tile_cache_bytes=0, gateway_cache_bytes=0,
                  prefetch=False)
    stop = threading.Event()
    results: dict[str, Any] = {}
    with running(sysm):
        first = {w["pid"] for w in sysm.stats()["workers"]}
        client = threading.Thread(target=_burst, args=(sysm, stop, results))
        client.start()
        try:
            wait_for(lambda: len(sysm.stats()["workers"]) == 3, 20, what="pool grown to MAX")
            grown = {w["pid"] for w in sysm.stats()["workers"]}
            wait_for(lambda: all(w["served"] > 0 for w in sysm.stats()["workers"]), 10,
                     what="the new workers taking load")
        finally:
            stop.set()
            client.join(30)
        assert not client.is_alive()
        assert results["answered"] == set(range(results["sent"]))  # one reply per request
        assert results["errors"] == []
        assert first < grown

        # quiet: the two extra workers exit after worker_idle_exit, MIN stays
        wait_for(lambda: len(sysm.stats()["workers"]) == 1, 20, what="pool back to MIN")
        stats = sysm.stats()
        survivor = {w["pid"] for w in stats["workers"]}
        assert survivor < grown
        gone = grown - survivor
        wait_for(lambda: not any(pid_alive(p) for p in gone), 10, what="retired workers exit")
        assert stats["routing"]["worker_deaths"] == 0  # they said DISCONNECT: left, not died
        wait_for(lambda: sysm.logs().count(" retired (exit 0)") == 2, 10,
                 what="the launcher reaping both, exit status 0")
        logs = sysm.logs()
        assert logs.count("pool grows to") == 2
        assert "restarting in" not in logs  # a planned stop is not a crash
        # the router's map holds only the survivor: every slide is served by it
        ws = sysm.ws()
        try:
            for slide in SLIDES:
                assert ws.tile(slide, 8, 0, 0)[0]["ok"]
        finally:
            ws.close()
        assert len(sysm.stats()["workers"]) == 1
