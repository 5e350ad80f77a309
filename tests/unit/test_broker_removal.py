"""What a worker's removal counts against the requests it held (a real Broker, real
sockets): the request it was working on counts as having crashed it; a request that could
not even be sent to it crashed nothing and costs no retry."""

from __future__ import annotations

from pathlib import Path

import zmq

from config.settings import Settings
from router.broker import Broker
from router.registry import Task, WorkerState


def _task(tid: int, slide: str) -> Task:
    return Task(tid, None, tid, {"op": "tile", "slide": slide}, slide, deadline=1e12)


def test_a_request_that_cannot_be_sent_crashed_nothing(tmp_path: Path) -> None:
    settings = Settings(frontend=f"ipc://{tmp_path}/f.ipc", backend=f"ipc://{tmp_path}/b.ipc",
                        prefetch=False)
    broker = Broker(settings, zmq.Context())
    try:
        # a worker the router still lists but whose connection is gone (ROUTER_MANDATORY:
        # sending to it fails at once), already holding one request it was sent earlier
        worker = WorkerState(b"w-gone", capacity=4)
        broker.registry.add(worker)
        held = _task(1, "a.tiff")
        held.gateway = b"gw"
        broker.registry.assign(worker, held, 0.0)
        unsent = _task(2, "b.tiff")
        unsent.gateway = b"gw"
        broker.dispatch(worker, unsent)
        assert broker.registry.get(b"w-gone") is None  # removed as unreachable
        assert (held.crashes, held.attempts) == (1, 1)  # what it was working on
        assert (unsent.crashes, unsent.attempts) == (0, 0)  # never reached it
        assert unsent in list(broker.queue) and held in list(broker.queue)  # both wait
        # the same with nothing else in flight: no crash counted at all (a stale message
        # re-registering a worker whose connection is gone must not quarantine a slide)
        alone = WorkerState(b"w-gone-2", capacity=4)
        broker.registry.add(alone)
        lonely = _task(3, "c.tiff")
        lonely.gateway = b"gw"
        broker.dispatch(alone, lonely)
        assert (lonely.crashes, lonely.attempts) == (0, 0) and lonely in list(broker.queue)
    finally:
        broker.close()
