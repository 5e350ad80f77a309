"""SIGTERM drains: in-flight work is answered before the process exits."""

from __future__ import annotations

import signal

import pytest
import websocket

from tests.helpers import System, wait_for


@pytest.mark.parametrize("fresh_system", [{"open_latency": 1.0, "workers": 1}], indirect=True)
@pytest.mark.parametrize("component", ["router", "gateway"])
def test_sigterm_finishes_in_flight_work_then_exits(fresh_system: System, component: str
                                                    ) -> None:
    system = fresh_system
    ws = system.ws()
    try:
        ws.send({"id": "slow", "op": "info", "slide": "a.tiff"})  # ~1 s: the open is slow
        wait_for(lambda: any(w["inflight"] for w in system.stats()["workers"]), 5, 0.02,
                 what="request in flight")
        proc = system.procs[component]
        proc.send_signal(signal.SIGTERM)
        header, _ = ws.recv()
        if component == "gateway":  # first its notice (id null): stop sending, reconnect
            assert header["id"] is None and header["error"]["code"] == "unavailable", header
            header, _ = ws.recv()
        assert header["id"] == "slow" and header["ok"] is True, header
        assert proc.wait(10) == 0
    finally:
        ws.close()


def test_gateway_sigterm_under_load_answers_every_request_then_closes(
        fresh_system: System) -> None:
    """A client keeps 4 requests in flight while the gateway is told to stop, and stops
    sending at the first 'unavailable' (as the viewer does, to re-send after reconnecting):
    every request sent gets a reply (a tile or 'unavailable') before the close frame."""
    system = fresh_system
    ws = system.ws()
    sent, answered, codes, closed = 0, set(), set(), False
    gateway = system.procs["gateway"]
    try:
        for sent in range(4):
            ws.send({"id": sent, "op": "tile", "slide": "a.tiff", "level": 12,
                     "col": sent % 12, "row": sent // 12})
        sent = 4
        for _ in range(5000):  # bounded; ends with the close frame
            try:
                header, _ = ws.recv()
            except (websocket.WebSocketConnectionClosedException, OSError):
                break  # close frame (or the close handshake's echo hit a closed socket)
            codes.add("ok" if header["ok"] else header["error"]["code"])
            if header["id"] is None:  # the gateway's notice: stop sending
                continue
            answered.add(header["id"])
            if sent == 40:
                gateway.send_signal(signal.SIGTERM)
            if sent < 400 and not closed and "unavailable" not in codes:
                try:
                    ws.send({"id": sent, "op": "tile", "slide": "a.tiff",
                             "level": 11 + sent % 2, "col": sent % 6, "row": (sent // 6) % 4})
                    sent += 1
                except (BrokenPipeError, ConnectionResetError,
                        websocket.WebSocketConnectionClosedException):
                    closed = True  # the server closed first: that request was never sent
        assert answered == set(range(sent)), sorted(set(range(sent)) - answered)[:10]
        assert codes <= {"ok", "unavailable"} and "ok" in codes
        assert gateway.wait(15) == 0
    finally:
        ws.sock.close()
