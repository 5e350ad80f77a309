"""The latency/fault proxy against a real local echo server: the remote-store tests and
benchmarks trust it to add exactly the delay asked, keep bytes in order and fail on demand
the way a network does, so each of those is checked here on real sockets."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from scripts.benchlib.tcpproxy import Mode, TcpProxy

DEADLINE = 5.0


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.settimeout(DEADLINE * 2)
        try:
            while data := self.request.recv(65536):  # ends at EOF, error or timeout
                self.request.sendall(data)
        except OSError:
            pass


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture(scope="module")
def echo() -> Iterator[tuple[str, int]]:
    server = _EchoServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield server.server_address[:2]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(DEADLINE)


@pytest.fixture
def proxy(echo: tuple[str, int]) -> Iterator[TcpProxy]:
    with TcpProxy(*echo, rtt=0.0, handshake=False) as p:
        yield p


def connect(p: TcpProxy, timeout: float = DEADLINE) -> socket.socket:
    s = socket.create_connection(p.address, timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_exactly(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    deadline = time.monotonic() + DEADLINE
    while len(buf) < n:
        assert time.monotonic() < deadline, f"got {len(buf)} of {n} bytes"
        chunk = s.recv(n - len(buf))
        assert chunk, f"EOF after {len(buf)} of {n} bytes"
        buf += chunk
    return bytes(buf)


def wait_until(pred: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_round_trip_takes_at_least_the_rtt(echo: tuple[str, int]) -> None:
    rtt = 0.08
    with TcpProxy(*echo, rtt=rtt, handshake=True) as p:
        t0 = time.monotonic()
        with connect(p) as s:
            s.sendall(b"first")
            assert recv_exactly(s, 5) == b"first"
            first = time.monotonic() - t0
            t1 = time.monotonic()
            s.sendall(b"again")
            assert recv_exactly(s, 5) == b"again"
            again = time.monotonic() - t1
    # asyncio may wake a timer up to its clock resolution (ns) early: 1 ms of slack
    assert again >= rtt - 0.001
    assert first >= 2 * rtt - 0.001  # a new connection pays the handshake round trip too


def test_order_kept_under_many_small_writes_and_a_shrinking_delay(proxy: TcpProxy) -> None:
    proxy.set_rtt(0.05)
    n = 2000
    payload = b"".join(struct.pack(">I", i) for i in range(n))
    with connect(proxy) as s:
        for i in range(n // 2):
            s.sendall(payload[4 * i:4 * i + 4])
        proxy.set_rtt(0.0)  # later chunks are due before earlier ones: must not overtake
        for i in range(n // 2, n):
            s.sendall(payload[4 * i:4 * i + 4])
        assert recv_exactly(s, len(payload)) == payload


def test_counters_move(proxy: TcpProxy) -> None:
    before = proxy.stats()
    with connect(proxy) as s:
        s.sendall(b"x" * 1000)
        recv_exactly(s, 1000)
        wait_until(lambda: proxy.stats().active == 1, "an active connection")
    wait_until(lambda: proxy.stats().active == 0, "the connection to end")
    after = proxy.stats()
    assert after.connections == before.connections + 1
    assert after.bytes_up - before.bytes_up == 1000
    assert after.bytes_down - before.bytes_down == 1000
    proxy.reset_stats()
    assert proxy.stats().bytes_up == 0


def test_cut_refuses_new_and_closes_existing(proxy: TcpProxy) -> None:
    with connect(proxy) as s:
        s.sendall(b"hi")
        recv_exactly(s, 2)
        proxy.set_mode(Mode.CUT)
        with contextlib.suppress(ConnectionResetError):  # closed: FIN, or RST if unread
            assert s.recv(10) == b""
    with pytest.raises(ConnectionRefusedError):
        connect(proxy).close()
    proxy.set_mode("normal")
    with connect(proxy) as s:
        s.sendall(b"back")
        assert recv_exactly(s, 4) == b"back"


def test_stall_holds_data_until_normal(proxy: TcpProxy) -> None:
    with connect(proxy) as s:
        proxy.set_mode(Mode.STALL)
        s.sendall(b"held")
        with connect(proxy, timeout=0.3) as fresh:  # new connections are accepted too
            fresh.sendall(b"also")
            with pytest.raises(TimeoutError):
                fresh.recv(10)
            s.settimeout(0.2)
            with pytest.raises(TimeoutError):
                s.recv(10)
            assert proxy.stats().bytes_down == 0
            proxy.set_mode(Mode.NORMAL)
            fresh.settimeout(DEADLINE)
            assert recv_exactly(fresh, 4) == b"also"
        s.settimeout(DEADLINE)
        assert recv_exactly(s, 4) == b"held"


def test_reset_gives_econnreset(proxy: TcpProxy) -> None:
    with connect(proxy) as s:
        s.sendall(b"hi")
        recv_exactly(s, 2)
        proxy.set_mode(Mode.RESET)
        with pytest.raises(ConnectionResetError):
            s.recv(10)
    with pytest.raises(ConnectionResetError), connect(proxy) as s:  # new ones are reset too
        s.recv(10)  # (the RST may already fail the connect: accepted, then reset at once)
    proxy.set_mode(Mode.NORMAL)
    with connect(proxy) as s:
        s.sendall(b"ok")
        assert recv_exactly(s, 2) == b"ok"


def test_stop_closes_listener_and_connections(echo: tuple[str, int]) -> None:
    p = TcpProxy(*echo).start()
    s = connect(p)
    p.stop()
    assert p._thread is None
    with contextlib.suppress(ConnectionResetError):
        assert s.recv(10) == b""
    s.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(p.address, timeout=DEADLINE).close()
    p.stop()  # twice is fine
