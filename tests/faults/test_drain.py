"""SIGTERM drains: in-flight work is answered before the process exits (the gateway's
hand-off to a sibling: tests/faults/test_gateway_handoff.py)."""

from __future__ import annotations

import signal
import struct

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
        if component == "gateway":  # first its notice (id null, not an error): reconnect
            assert header == {"id": None, "notice": "reconnect",
                              "message": header.get("message")}, header
            header, _ = ws.recv()
        assert header["id"] == "slow" and header["ok"] is True, header
        assert proc.wait(10) == 0
    finally:
        ws.close()


@pytest.mark.parametrize("fresh_system", [{"drain_timeout": 10.0}], indirect=True)
def test_gateway_sigterm_answers_a_client_that_ignores_the_notice_then_closes(
        fresh_system: System) -> None:
    """A client that does not know the reconnect notice keeps 4 requests in flight while
    the gateway is told to stop and goes on sending: every request gets a good reply (no
    'unavailable'); once the client goes quiet the gateway closes with 1001 and exits."""
    system = fresh_system
    ws = system.ws()
    sent, answered, codes, notices, close_code = 0, set(), set(), 0, None
    gateway = system.procs["gateway"]
    try:
        for sent in range(4):
            ws.send({"id": sent, "op": "tile", "slide": "a.tiff", "level": 12,
                     "col": sent % 12, "row": sent // 12})
        sent = 4
        for _ in range(5000):  # bounded; ends with the close frame
            opcode, data = ws.sock.recv_data()
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                close_code = struct.unpack(">H", data[:2])[0]
                break
            header = ws.parse(opcode, data)[0]
            if header["id"] is None:
                notices += 1
                continue
            codes.add("ok" if header["ok"] else header["error"]["code"])
            answered.add(header["id"])
            if sent == 40:
                gateway.send_signal(signal.SIGTERM)
            if sent < 200:
                ws.send({"id": sent, "op": "tile", "slide": "a.tiff",
                         "level": 11 + sent % 2, "col": sent % 6, "row": (sent // 6) % 4})
                sent += 1
        assert answered == set(range(sent)), sorted(set(range(sent)) - answered)[:10]
        assert codes == {"ok"} and notices == 1
        assert close_code == 1001
        assert gateway.wait(15) == 0
    finally:
        ws.sock.close()
