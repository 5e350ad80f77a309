"""Multi-host layout over tcp://: a worker host joins and leaves under load; the router
picks it up and drops it without a restart, and no request is lost."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

from tests.helpers import System, free_port, wait_for


def test_worker_host_joins_and_leaves_under_load(slide_root: Path) -> None:
    sysm = System(slide_root, workers=1, frontend=f"tcp://127.0.0.1:{free_port()}",
                  backend=f"tcp://127.0.0.1:{free_port()}", gateway_cache_bytes=0)
    results: dict[str, object] = {}
    stop = threading.Event()

    def stream() -> None:
        """Keep 8 requests in flight so one worker saturates and others must help."""
        ws = sysm.ws()
        ids, errors, sent = set(), [], 0

        def send(n: int) -> None:
            ws.send({"id": n, "op": "tile", "slide": ["a.tiff", "sub/b.tiff"][n % 2],
                     "level": 8 + n % 4, "col": n % 2, "row": 0})
        try:
            for sent in range(8):
                send(sent)
            sent = 8
            while len(ids) < sent:
                header, _ = ws.recv()
                ids.add(header["id"])
                if not header["ok"]:
                    errors.append(header["error"]["code"])
                if not stop.is_set() and sent < 5000:
                    send(sent)
                    sent += 1
        finally:
            ws.close()
            results.update(sent=sent, ids=ids, errors=errors)

    try:
        sysm.start()
        client = threading.Thread(target=stream)
        client.start()
        # a second "host": another launcher with its own workers, same router address
        sysm.spawn("host2", "workers.launcher", TILEROUTER_WORKERS="2")
        wait_for(lambda: len(sysm.stats()["workers"]) == 3, 20, what="host2 workers joined")
        wait_for(lambda: sum(w["served"] > 0 for w in sysm.stats()["workers"]) >= 2, 20,
                 what="new workers taking load")
        assert sysm.stop_process("host2", signal.SIGTERM) == 0
        wait_for(lambda: len(sysm.stats()["workers"]) == 1, 20, what="host2 workers dropped")
        stop.set()
        client.join(30)
        assert not client.is_alive()
        assert results["ids"] == set(range(results["sent"]))  # one reply per request
        assert set(results["errors"]) <= {"worker_lost"}, results["errors"]
        assert sysm.stats()["routing"]["worker_deaths"] == 0  # they left cleanly
    finally:
        stop.set()
        sysm.stop()
