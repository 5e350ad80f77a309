"""SIGTERM drains: in-flight work is answered before the process exits."""

from __future__ import annotations

import signal

import pytest

from tests.helpers import System, wait_for


@pytest.mark.parametrize("fresh_system", [{"open_latency": 1.0, "workers": 1}], indirect=True)
def test_router_sigterm_finishes_in_flight_work_then_exits(fresh_system: System) -> None:
    system = fresh_system
    ws = system.ws()
    try:
        ws.send({"id": "slow", "op": "info", "slide": "a.tiff"})  # ~1 s: the open is slow
        wait_for(lambda: any(w["inflight"] for w in system.stats()["workers"]), 5, 0.02,
                 what="request in flight")
        router = system.procs["router"]
        router.send_signal(signal.SIGTERM)
        header, _ = ws.recv()
        assert header["id"] == "slow" and header["ok"] is True, header
        assert router.wait(10) == 0
    finally:
        ws.close()


@pytest.mark.parametrize("fresh_system", [{"open_latency": 1.0, "workers": 1}], indirect=True)
def test_gateway_sigterm_delivers_pending_replies(fresh_system: System) -> None:
    system = fresh_system
    ws = system.ws()
    try:
        ws.send({"id": "slow", "op": "info", "slide": "c.tiff"})
        wait_for(lambda: any(w["inflight"] for w in system.stats()["workers"]), 5, 0.02,
                 what="request in flight")
        gateway = system.procs["gateway"]
        gateway.send_signal(signal.SIGTERM)
        header, _ = ws.recv()
        assert header["id"] == "slow" and header["ok"] is True, header
        assert gateway.wait(10) == 0
    finally:
        ws.close()
