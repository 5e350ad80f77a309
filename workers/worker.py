"""Worker process: a DEALER to each router, heartbeats, reconnect with backoff.

Paranoid-Pirate style: the worker registers with each router (``backend`` may list
several; every one gets this worker) with its open slides, heartbeats, and if a router
goes silent for ``liveness x interval`` it reconnects to that router (backoff doubling
up to 32 intervals) and registers again with its current open readers, so a restarted
router rebuilds its map without anything being reopened; the other routers are served
meanwhile. Requests from all routers wait in one local queue and are answered one at a
time; every REPLY and heartbeat tells each router the worker's whole load and how much
of it is that router's, so routers that share a worker do not over-commit it.

Requests are rendered on the thread that owns the socket (handing each to a render
thread and back cost 0.17 ms of CPU per tile, 10% of the worker's throughput). So
that a slow open or a large render never silences the heartbeats (the router would
otherwise declare a busy worker dead), a small heartbeat thread may use the socket,
but only while the main thread is rendering: ``_sock_lock`` is held by the main
thread at all other times, which also gives ZeroMQ the memory barrier it asks for
when a socket moves between threads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from typing import Any

import zmq

from config.endpoints import ResolverThread, RouterEndpoints, changes, wants_ipv6
from config.errors import ProtocolError
from config.settings import Settings
from router import protocol
from router.curve import secure_client
from workers.handler import RequestHandler
from workers.load_report import LoadReport

log = logging.getLogger(__name__)

MAX_BACKOFF_FACTOR = 32
# on stop, messages already delivered that are still handled (requests among them are at
# most worker_capacity; the router re-sends anything else once it reads our DISCONNECT)
FINAL_DRAIN_MESSAGES = 64
# Fault injection for tests only: a slide that crashes OpenSlide hard cannot be made on
# demand, so this env var makes the worker die (os._exit) on requests for one slide.
_CRASH_SLIDE = os.environ.get("TILEROUTER_TEST_CRASH_SLIDE")


class _Link:
    """The connection to one router."""

    def __init__(self, endpoint: str, interval: float) -> None:
        self.endpoint = endpoint
        self.sock: zmq.Socket | None = None
        self.expiry = 0.0  # router silent past this: reconnect
        self.next_heartbeat = 0.0
        self.reconnect_at: float | None = None
        self.backoff = interval
        self.pending = 0  # this router's requests in the local queue or being served
        self.told_external = 0  # other routers' load as this router last heard it


class Worker:
    """One worker; ``run`` returns when ``stop`` is set."""

    def __init__(self, settings: Settings, context: zmq.Context | None = None) -> None:
        self.settings = settings
        self.identity = f"w-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}".encode()
        self.context = context or zmq.Context.instance()
        self.handler = RequestHandler(settings)
        self.stop = threading.Event()
        self.served = 0
        self.errors = 0
        self._slides: tuple[str, ...] = ()
        # dns+tcp:// routers are re-resolved on their own thread (config/endpoints.py)
        self._routers = ResolverThread(RouterEndpoints(settings.backend),
                                       settings.router_dns_interval)
        self._links = [_Link(ep, settings.heartbeat_interval)
                       for ep in self._routers.endpoints.resolve()]
        self._queue: deque[tuple[_Link, dict[str, Any]]] = deque()
        self._sock_lock = threading.Lock()  # see the module docstring
        self._finished = threading.Event()  # ends the heartbeat thread
        self.load_report = LoadReport.from_env(settings.heartbeat_expiry)  # elastic pools

    # --- state reported to the routers ----------------------------------------------------

    def state(self, link: _Link) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "capacity": self.settings.worker_capacity,
            **self._progress(link),
        }

    def _progress(self, link: _Link) -> dict[str, Any]:
        tiles, decoded = self.handler.tiles, self.handler.decoded
        load = sum(ln.pending for ln in self._links)
        link.told_external = load - link.pending
        # the first connected router exports this worker's series in /metrics (the others
        # do not: a sum over routers counts each worker once) and gets its metrics report
        primary = next((ln for ln in self._links if ln.sock is not None), None) is link
        progress = {"slides": list(self._slides), "served": self.served,
                    "opens": self.handler.readers.opens,
                    "open_s": round(self.handler.readers.open_seconds, 4),
                    "cache": {"hits": tiles.hits, "misses": tiles.misses},
                    "load": load, "mine": link.pending, "primary": primary}
        if decoded is not None:
            progress["decoded"] = {"hits": decoded.hits, "misses": decoded.misses}
        remote = self.handler.factory.mounts.stats()
        if remote:
            progress["remote"] = remote
        # throttled: see handler.METRICS_EVERY
        metrics = self.handler.metrics_report() if primary else None
        if metrics is not None:
            progress["m"] = metrics
        return progress

    # --- socket lifecycle (main thread, holding _sock_lock) -------------------------------

    def _connect(self, link: _Link) -> None:
        sock = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.IDENTITY, self.identity)
        sock.setsockopt(zmq.LINGER, 0)
        secure_client(sock, self.settings)
        if wants_ipv6(link.endpoint):
            sock.setsockopt(zmq.IPV6, 1)
        sock.connect(link.endpoint)
        link.sock = sock
        link.reconnect_at = None
        self._send(link, protocol.REGISTER, self.state(link))
        link.expiry = time.monotonic() + self.settings.heartbeat_expiry
        log.info("worker %s connected to %s", self.identity.decode(), link.endpoint)

    def _disconnect(self, link: _Link) -> None:
        if link.sock is not None:
            link.sock.close(linger=0)
            link.sock = None
        # requests of that router still queued are answered all the same: if it was only
        # slow, the replies reach it over the new connection (same identity); if it died,
        # its gateways have re-sent them elsewhere and these replies go nowhere

    def _send(self, link: _Link, command: bytes, header: dict[str, Any],
              payload: bytes | None = None) -> None:
        if link.sock is None:
            return
        try:  # never block: with no usable router connection a DEALER send would hang
            protocol.send_nowait(link.sock, protocol.encode(command, header, payload))
        except zmq.Again:
            log.debug("router not reachable; %s dropped", protocol.COMMANDS.get(command))
        link.next_heartbeat = time.monotonic() + self.settings.heartbeat_interval

    # --- main loop ------------------------------------------------------------------------

    def run(self) -> None:
        self._sock_lock.acquire()
        beater = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        for link in self._links:
            self._connect(link)
        beater.start()
        self._routers.start()
        poll_ms = max(1, min(int(self.settings.heartbeat_interval * 1000), 250))
        try:
            while not self.stop.is_set():
                # read first: after a long render the routers' heartbeats are waiting,
                # and a link is only judged silent once they have been read
                self._receive(0 if self._queue else poll_ms)
                self._keep_links(time.monotonic())
                if self._queue:
                    self._serve(*self._queue.popleft())
        finally:
            self._routers.stop()
            # what the routers already sent us is answered before we leave (each router
            # retries anything else elsewhere once it reads our DISCONNECT)
            with contextlib.suppress(zmq.ZMQError):
                self._receive(0, limit=FINAL_DRAIN_MESSAGES)
                while self._queue:
                    self._serve(*self._queue.popleft())
            for link in self._links:
                with contextlib.suppress(zmq.ZMQError):
                    self._send(link, protocol.DISCONNECT, {})
                if link.sock is not None:  # linger a little: a lost DISCONNECT reads as a crash
                    link.sock.close(linger=int(1000 * min(1.0, self.settings.heartbeat_interval)))
                    link.sock = None
            self._finished.set()
            self._sock_lock.release()
            beater.join(timeout=5)
            self.handler.close()
            log.info("worker %s stopped: served=%d errors=%d opens=%d",
                     self.identity.decode(), self.served, self.errors,
                     self.handler.readers.opens)

    def _keep_links(self, now: float) -> None:
        """Heartbeats due, silent routers dropped, dropped ones reconnected after backoff."""
        self._follow_routers()
        for link in self._links:
            if link.sock is None:
                if link.reconnect_at is not None and now >= link.reconnect_at:
                    self._connect(link)
            elif now >= link.expiry:
                log.warning("router %s silent; reconnecting in %.2fs", link.endpoint,
                            link.backoff)
                self._disconnect(link)
                link.reconnect_at = now + link.backoff
                link.backoff = min(link.backoff * 2,
                                   self.settings.heartbeat_interval * MAX_BACKOFF_FACTOR)
            elif now >= link.next_heartbeat:
                self._send(link, protocol.HEARTBEAT, self.state(link))

    def _follow_routers(self) -> None:
        """Routers that joined the dns+tcp name get this worker; one that left is told
        DISCONNECT (its router re-sends our share of its requests elsewhere), and what it
        had queued here is dropped, not rendered for nobody."""
        endpoints = self._routers.take()
        if endpoints is None:
            return
        added, removed = changes([ln.endpoint for ln in self._links], endpoints)
        for link in [ln for ln in self._links if ln.endpoint in removed]:
            self._links = [ln for ln in self._links if ln is not link]
            self._queue = deque(item for item in self._queue if item[0] is not link)
            link.pending = 0
            with contextlib.suppress(zmq.ZMQError):
                self._send(link, protocol.DISCONNECT, {})
            if link.sock is not None:
                link.sock.close(linger=int(1000 * min(1.0, self.settings.heartbeat_interval)))
                link.sock = None
            log.info("router %s left", link.endpoint)
        for endpoint in added:
            link = _Link(endpoint, self.settings.heartbeat_interval)
            self._links = [*self._links, link]
            self._connect(link)

    def _heartbeat_loop(self) -> None:
        """Heartbeats while the main thread renders. It holds the lock at all other times,
        and heartbeats itself then; never blocking on the lock keeps this thread from
        waking at every render."""
        interval = self.settings.heartbeat_interval
        while not self._finished.wait(interval / 4):
            self.load_report.write(sum(ln.pending for ln in self._links), self.served)
            if not self._sock_lock.acquire(blocking=False):
                continue
            try:
                now = time.monotonic()
                for link in self._links:
                    if link.sock is not None and now >= link.next_heartbeat:
                        with contextlib.suppress(zmq.ZMQError):
                            self._send(link, protocol.HEARTBEAT, self.state(link))
            finally:
                self._sock_lock.release()

    def _receive(self, timeout_ms: int, limit: int | None = None) -> None:
        """Move what the routers have sent into the local queue (requests) or act on it.
        Under steady load more is always waiting, so this stops once ``stop`` is set (or
        after ``limit`` messages)."""
        live = [link for link in self._links if link.sock is not None]
        if not live:
            self.stop.wait(timeout_ms / 1000)
            return
        poller = zmq.Poller()
        for link in live:
            poller.register(link.sock, zmq.POLLIN)
        ready = dict(poller.poll(timeout_ms))
        handled = 0
        for link in live:
            while link.sock is not None and link.sock in ready and (
                    handled < limit if limit is not None else not self.stop.is_set()):
                try:
                    frames = link.sock.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                handled += 1
                self._on_message(link, frames)

    def _on_message(self, link: _Link, frames: list[zmq.Frame]) -> None:
        try:
            msg = protocol.parse(frames)
        except ProtocolError as exc:
            log.warning("dropping malformed message from router: %s", exc)
            return
        link.expiry = time.monotonic() + self.settings.heartbeat_expiry
        link.backoff = self.settings.heartbeat_interval
        if msg.command == protocol.REQUEST:
            self._queue.append((link, msg.header))
            link.pending += 1
        elif msg.command == protocol.HEARTBEAT:  # the router's wait queue, for our launcher
            self.load_report.router_said(link.endpoint, msg.header)
        elif msg.command == protocol.DISCONNECT:
            log.info("router %s asked us to reconnect", link.endpoint)
            self._disconnect(link)
            self._connect(link)

    def _serve(self, link: _Link, request: dict[str, Any]) -> None:
        if _CRASH_SLIDE and request.get("slide") == _CRASH_SLIDE:
            os._exit(70)  # simulated native crash (see _CRASH_SLIDE)
        self._sock_lock.release()  # the heartbeat thread may speak while we render
        try:
            reply, payload = self.handler.safe_handle(request)
        finally:
            self._sock_lock.acquire()
        self.served += 1
        link.pending -= 1
        if not reply.get("ok"):
            self.errors += 1
        self._slides = tuple(self.handler.readers.slides())
        self._send(link, protocol.REPLY,
                   {"tid": request.get("tid"), "r": reply, **self._progress(link)}, payload)
        if len(self._links) > 1:  # routers that think us busier than we are hear it now
            load = sum(ln.pending for ln in self._links)
            for other in self._links:
                if other is not link and load - other.pending < other.told_external:
                    self._send(other, protocol.HEARTBEAT, self.state(other))
