"""A TCP proxy that adds latency and faults between a client and a real server.

The remote slide stores (S3, HTTP range) are tested and benchmarked against real servers on
this machine, where the round trip is ~50 us; what makes remote reading slow or broken in
production is the network in between. This proxy stands in for that network: each byte is
held for half the configured round-trip time in each direction, and the link can be switched
at run time to fail the way real links fail:

``normal``  forward, with the delay.
``cut``     nothing listens any more (new connections are refused) and existing ones close.
``stall``   connections are accepted and data is read, but nothing is forwarded until the
            mode changes back (a client with a timeout sees it expire).
``reset``   existing connections and every new one are closed with a TCP RST (SO_LINGER 0):
            the client sees ECONNRESET.

Byte order within a connection is kept however the delay changes: each direction is a FIFO
of (release time, chunk) with a single writer, never a sleep per chunk that would let a
later chunk overtake an earlier one. The proxy runs its own event loop in its own thread
(``start()``/``stop()`` or ``with``), so synchronous test code and benchmarks both drive it;
``set_mode``/``set_rtt`` return once the change is in force.

Importable as ``scripts.benchlib.tcpproxy`` (tests: pytest puts the repository root on
sys.path) and as ``benchlib.tcpproxy`` (scripts in ``scripts/``). Run alone it proxies one
target until Ctrl-C: ``python scripts/benchlib/tcpproxy.py HOST:PORT --rtt-ms 20``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

CHUNK = 64 * 1024
QUEUE_CHUNKS = 64  # per direction: at most 4 MiB held, then the reader waits (backpressure)
OP_TIMEOUT = 5.0  # start, stop, mode switches, upstream connect
_RST_LINGER = struct.pack("ii", 1, 0)


class Mode(StrEnum):
    NORMAL = "normal"
    CUT = "cut"
    STALL = "stall"
    RESET = "reset"


@dataclass(frozen=True)
class ProxyStats:
    """Counters since start (or ``reset_stats``): connections accepted, live ones, and the
    bytes forwarded client->target (``bytes_up``) and target->client (``bytes_down``)."""

    connections: int
    active: int
    bytes_up: int
    bytes_down: int


def _abort(writer: asyncio.StreamWriter | None, rst: bool) -> None:
    """Close now, dropping what is buffered; with ``rst`` the peer gets a RST, not a FIN."""
    if writer is None or writer.transport.is_closing():
        return
    if rst:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST_LINGER)
    writer.transport.abort()


class _Conn:
    """One proxied connection: two directions, each a reader task feeding a FIFO and a
    writer task releasing it in order once each chunk's release time has come."""

    def __init__(self, proxy: TcpProxy, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, flowing: asyncio.Event,
                 count: Callable[[str, int], None]) -> None:
        self.proxy = proxy
        self.flowing = flowing  # cleared while the proxy stalls
        self.count = count  # (direction, bytes forwarded)
        self.client = (reader, writer)
        self.upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.closed = False

    async def run(self) -> None:
        p = self.proxy
        try:
            self.upstream = await asyncio.wait_for(
                asyncio.open_connection(p.target_host, p.target_port), OP_TIMEOUT)
            if p.handshake and p.rtt > 0 and not self.closed:
                # A real connection costs one round trip (SYN, SYN-ACK) before its first byte.
                await asyncio.sleep(p.rtt)
        except OSError:  # TimeoutError included
            self.abort(rst=False)
            return
        if self.closed:  # cut or reset while connecting
            self.abort(rst=p.mode is Mode.RESET)
            return
        up_r, up_w = self.upstream
        cl_r, cl_w = self.client
        self.tasks = [asyncio.create_task(self._direction(cl_r, up_w, "up")),
                      asyncio.create_task(self._direction(up_r, cl_w, "down"))]
        clean = False
        try:
            await asyncio.gather(*self.tasks)
            clean = True
        except (OSError, asyncio.CancelledError):
            pass  # a peer reset, or this connection was aborted: nothing left to pass on
        finally:
            if clean:  # both sides sent EOF and it was passed on
                for w in (cl_w, up_w):
                    w.close()
            else:
                self.abort(rst=False)

    async def _direction(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         way: str) -> None:
        queue: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue(QUEUE_CHUNKS)
        feeder = asyncio.create_task(self._feed(reader, queue))
        try:
            await self._release(queue, writer, way)
        finally:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await feeder

    async def _feed(self, reader: asyncio.StreamReader,
                    queue: asyncio.Queue[tuple[float, bytes | None]]) -> None:
        """Read until EOF (queued as b"") or a socket error (queued as None), stamping each
        chunk with its release time: the error reaches the other side after the data."""
        loop = asyncio.get_running_loop()
        while True:  # ends at EOF, on a socket error or when cancelled
            try:
                data: bytes | None = await reader.read(CHUNK)
            except OSError:
                data = None
            await queue.put((loop.time() + self.proxy.rtt / 2, data))
            if not data:
                return

    async def _release(self, queue: asyncio.Queue[tuple[float, bytes | None]],
                       writer: asyncio.StreamWriter, way: str) -> None:
        loop = asyncio.get_running_loop()
        while True:  # ends at EOF, on a socket error or when cancelled
            release, data = await queue.get()
            wait = release - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            await self.flowing.wait()  # stall: hold everything read until the mode changes
            if data is None:
                raise ConnectionResetError(f"proxy: peer of the {way!r} direction failed")
            if not data:
                if writer.can_write_eof():
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                return
            writer.write(data)
            await writer.drain()
            self.count(way, len(data))

    def abort(self, rst: bool) -> None:
        self.closed = True
        for t in self.tasks:
            t.cancel()
        _abort(self.client[1], rst)
        if self.upstream is not None:
            _abort(self.upstream[1], rst)


class TcpProxy:
    """Listen on ``listen_host``:``listen_port`` (0 = any free port; see ``port``) and
    forward every connection to ``target_host``:``target_port``, ``rtt`` seconds of round
    trip added (half each way). With ``handshake`` a new connection also waits one ``rtt``
    before its first byte moves, as over a real network, so connection reuse shows in
    benchmarks."""

    def __init__(self, target_host: str, target_port: int, *, rtt: float = 0.0,
                 handshake: bool = True, listen_host: str = "127.0.0.1",
                 listen_port: int = 0) -> None:
        if rtt < 0:
            raise ValueError(f"rtt must be >= 0, got {rtt}")
        self.target_host = target_host
        self.target_port = int(target_port)
        self.rtt = float(rtt)
        self.handshake = handshake
        self.listen_host = listen_host
        self.port = int(listen_port)
        self.mode = Mode.NORMAL
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._server: asyncio.base_events.Server | None = None
        self._flowing: asyncio.Event
        self._conns: set[_Conn] = set()
        self._counts = {"connections": 0, "up": 0, "down": 0}

    # -- public, any thread -------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        return (self.listen_host, self.port)

    @property
    def url(self) -> str:
        """``http://host:port`` of the proxy, for HTTP clients and ``endpoint_url``."""
        return f"http://{self.listen_host}:{self.port}"

    def start(self) -> TcpProxy:
        if self._thread is not None:
            raise RuntimeError("proxy already started")
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"tcpproxy->{self.target_host}:{self.target_port}")
        self._thread.start()
        if not self._ready.wait(OP_TIMEOUT):
            raise RuntimeError("tcpproxy: event loop did not start")
        if self._start_error is not None:
            self._thread.join(OP_TIMEOUT)
            self._thread = None
            raise self._start_error
        return self

    def stop(self) -> None:
        """Close the listener and every connection, end the loop, join the thread."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        if thread.is_alive():
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(loop.stop)
            thread.join(OP_TIMEOUT)
            if thread.is_alive():
                raise RuntimeError("tcpproxy: loop thread did not stop")
        self._thread = None

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def set_mode(self, mode: Mode | str) -> None:
        self._call(self._apply_mode(Mode(mode)))

    def set_rtt(self, rtt: float) -> None:
        """New delay for chunks read from now on; chunks already held keep their time."""
        if rtt < 0:
            raise ValueError(f"rtt must be >= 0, got {rtt}")
        self.rtt = float(rtt)

    def stats(self) -> ProxyStats:
        c = self._counts
        return ProxyStats(c["connections"], len(self._conns), c["up"], c["down"])

    def reset_stats(self) -> None:
        self._counts.update(connections=0, up=0, down=0)

    # -- loop thread --------------------------------------------------------------------

    def _call(self, coro: Any) -> Any:
        if self._loop is None or self._thread is None:
            coro.close()
            raise RuntimeError("proxy not started")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("call from a thread other than the proxy's own")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(OP_TIMEOUT)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._flowing = asyncio.Event()
            self._flowing.set()
            loop.run_until_complete(self._listen())
        except BaseException as exc:  # reported to start()'s caller
            self._start_error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._shutdown())
            loop.close()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._on_client, self.listen_host, self.port, reuse_address=True)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _close_listener(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), OP_TIMEOUT)

    async def _apply_mode(self, mode: Mode) -> None:
        self.mode = mode
        if mode is Mode.STALL:
            self._flowing.clear()
        else:
            self._flowing.set()
        if mode is Mode.CUT:
            await self._close_listener()
            self._abort_all(rst=False)
        elif mode is Mode.RESET:
            self._abort_all(rst=True)
        if mode is not Mode.CUT and self._server is None:
            await self._listen()  # same port as before: back from ``cut``

    def _abort_all(self, rst: bool) -> None:
        for conn in list(self._conns):
            conn.abort(rst)

    async def _on_client(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        self._counts["connections"] += 1
        if self.mode in (Mode.CUT, Mode.RESET):  # CUT: accepted just before the close
            _abort(writer, rst=self.mode is Mode.RESET)
            return
        conn = _Conn(self, reader, writer, self._flowing, self._count)
        self._conns.add(conn)
        try:
            await conn.run()
        except asyncio.CancelledError:  # stop(): not re-raised, as asyncio's streams (3.11)
            conn.abort(rst=False)  # log a cancelled connection handler as an error
        finally:
            self._conns.discard(conn)

    def _count(self, way: str, n: int) -> None:
        self._counts[way] += n

    async def _shutdown(self) -> None:
        await self._close_listener()
        self._abort_all(rst=False)
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=OP_TIMEOUT)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target", help="HOST:PORT to forward to")
    ap.add_argument("--rtt-ms", type=float, default=20.0)
    ap.add_argument("--port", type=int, default=0, help="listen port (0 = any free one)")
    args = ap.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    with TcpProxy(host, int(port), rtt=args.rtt_ms / 1000, listen_port=args.port) as proxy:
        print(f"tcpproxy: {proxy.url} -> {args.target}, rtt {args.rtt_ms:g} ms", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
