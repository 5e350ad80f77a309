"""The broker: a plain pyzmq poll loop between gateways (frontend) and workers (backend).

Plain (non-asyncio) pyzmq on purpose: it forwards about twice as many requests per core
as zmq.asyncio. Tile bytes are forwarded as the zmq.Frame they arrived in. With several
routers each is one shard (wsgateway/router_pool.py); a router knows no other."""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import zmq

from config.errors import (
    Busy,
    ProtocolError,
    Quarantined,
    TileRouterError,
    Timeout,
    Unavailable,
    WorkerLost,
)
from config.settings import Settings
from router import protocol
from router.broker_stats import broker_ready, broker_stats
from router.curve import start_authenticator
from router.policy import make_policy
from router.prefetch import Prefetcher, prefetch_idle
from router.quarantine import Quarantine
from router.registry import Registry, Removal, Task, WorkerState
from router.requests import check_relayed
from router.shard import ShardStats
from router.sockets import bind_endpoint, router_socket
from router.waiting import WaitQueue

log = logging.getLogger(__name__)

MAX_BATCH = 256  # messages drained from one socket before looking at the other
MAX_CAPACITY = 64
_GATEWAY_FIELDS = ("rid", "timeout")  # request header fields meant for the router only


class Broker:
    """Routes requests to workers; ``run`` until ``stop`` is set."""

    def __init__(self, settings: Settings, context: zmq.Context | None = None) -> None:
        self.settings = settings
        self.context = context or zmq.Context.instance()
        self.authenticator = start_authenticator(self.context, settings)
        self.frontend = router_socket(self.context, settings)
        self.backend = router_socket(self.context, settings)
        self.frontend_endpoint = bind_endpoint(self.frontend, settings.frontend)
        self.backend_endpoint = bind_endpoint(self.backend, settings.backend)
        self.registry = Registry()
        self.queue = WaitQueue()
        self.policy = make_policy(settings.policy, settings.max_affinity_wait)
        self.prefetcher = Prefetcher() if settings.prefetch else None
        self.counters: Counter[str] = Counter()
        self.quarantine = Quarantine()
        self.shard = ShardStats()  # the slides the gateways send here (this router's shard)
        self.stop = threading.Event()
        self.started = time.monotonic()
        self.incarnation = uuid.uuid4().hex[:12]  # a restarted router knows nothing sent before
        self.idle_worker_seconds_waiting = 0.0
        self.tids = itertools.count(1)
        self._next_heartbeat = 0.0
        self._last_tick = time.monotonic()
        self._drain_deadline: float | None = None
        self.last_request = 0.0
        self.snapshot: dict[str, Any] = {}
        # requests the router answers itself, named as Majordomo names its mmi.* services
        self.services: dict[str, Callable[[], dict[str, Any]]] = {
            protocol.SERVICE_STATS: self.stats, protocol.SERVICE_READY: lambda: broker_ready(self)}

    # --- main loop ------------------------------------------------------------------------

    def run(self) -> None:
        log.info("router up: frontend %s backend %s policy %s",
                 self.frontend_endpoint, self.backend_endpoint, self.policy.name)
        poller = zmq.Poller()
        poller.register(self.frontend, zmq.POLLIN)
        poller.register(self.backend, zmq.POLLIN)
        tick = min(0.1, self.settings.heartbeat_interval / 2)
        next_tick = time.monotonic()
        try:
            while not self.stop.is_set() or self._draining():
                timeout = max(0.0, next_tick - time.monotonic())
                events = dict(poller.poll(int(timeout * 1000) + 1))
                if self.backend in events:
                    self._drain(self.backend, self.on_backend)
                if self.frontend in events:
                    self._drain(self.frontend, self.on_frontend)
                now = time.monotonic()
                if now >= next_tick:
                    self.housekeeping(now)
                    next_tick = now + tick
        finally:
            self.close()

    def _draining(self) -> bool:
        """After stop: keep routing until queued and in-flight work is answered (bounded)."""
        now = time.monotonic()
        if self._drain_deadline is None:
            self._drain_deadline = now + self.settings.drain_timeout
            log.info("draining %d waiting and %d in-flight requests", len(self.queue),
                     self.inflight_count())
        return now < self._drain_deadline and bool(len(self.queue) or self.inflight_count())

    def inflight_count(self) -> int:
        return sum(len(w.inflight) for w in self.registry.workers.values())

    def _drain(self, sock: zmq.Socket, handle: Any) -> None:
        for _ in range(MAX_BATCH):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            try:
                handle(frames)
            except Exception:  # one bad message must never stop the router
                self.counters["internal_errors"] += 1
                log.exception("error handling a message")

    def housekeeping(self, now: float) -> None:
        self.purge_workers(now)
        self.expire_requests(now)
        if len(self.queue) and any(w.idle for w in self.registry.workers.values()):
            idle = sum(1 for w in self.registry.workers.values() if w.idle)
            self.idle_worker_seconds_waiting += idle * (now - self._last_tick)
        self._last_tick = now
        for worker in list(self.registry.workers.values()):
            prefetch_idle(self, worker)  # idle time may have begun since the last reply
        if now >= self._next_heartbeat:
            self.policy.adapt(self.registry)
            self.send_heartbeats()
            self._next_heartbeat = now + self.settings.heartbeat_interval
            self.snapshot = self.stats()

    def close(self) -> None:
        for task in list(self.queue):  # drain timed out: answer, never drop
            self.queue.remove(task)
            self._answer_error(task.gateway, task.rid, Unavailable("router shut down"))
        for worker in list(self.registry.workers.values()):
            self._send_worker(worker, protocol.DISCONNECT, {})
        self.frontend.close(linger=0)
        self.backend.close(linger=0)
        if self.authenticator is not None:
            self.authenticator.stop()
        log.info("router stopped: %s", {k: self.counters[k] for k in (
            "requests", "replies", "errors", "timeouts", "affinity_hits", "affinity_misses")})

    # --- gateways -------------------------------------------------------------------------

    def on_frontend(self, frames: list[zmq.Frame]) -> None:
        try:
            msg = protocol.parse(frames, routed=True)
        except ProtocolError as exc:
            self.counters["malformed"] += 1
            log.warning("malformed message from a gateway: %s", exc)
            return
        if msg.command == protocol.HEARTBEAT:  # echoed: our workers, which incarnation
            self._send_gateway(msg.identity, protocol.HEARTBEAT, {"workers": len(
                self.registry.workers), "incarnation": self.incarnation})
            return
        if msg.command != protocol.REQUEST:
            if msg.command != protocol.DISCONNECT:
                log.warning("unexpected %s from a gateway", msg.name)
            return
        rid = msg.header.get("rid")
        service = self.services.get(msg.header.get("op"))  # type: ignore[arg-type]
        if service is not None:
            self._send_gateway(msg.identity, protocol.REPLY, {"rid": rid, "ok": True,
                                                              **service()})
            return
        self.counters["requests"] += 1
        self.last_request = time.monotonic()
        if self.stop.is_set():
            self._answer_error(msg.identity, rid, Unavailable("router is shutting down"))
            return
        try:
            # the gateway validated it (router/requests.py); the router only checks what it
            # reads, and forwards the request without the gateway's own fields
            request = {k: v for k, v in check_relayed(msg.header).items()
                       if k not in _GATEWAY_FIELDS}
            slide = request.get("slide")
            if slide is not None:
                self.quarantine.check(slide)
                self.shard.note(slide)
        except TileRouterError as exc:
            self._answer_error(msg.identity, rid, exc)
            return
        timeout = msg.header.get("timeout")
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
            timeout = self.settings.request_timeout
        timeout = min(float(timeout), self.settings.request_timeout)
        tid = next(self.tids)
        request["tid"] = tid
        task = Task(tid, msg.identity, rid, request, slide, time.monotonic() + timeout)
        self.submit(task)

    def submit(self, task: Task) -> None:
        worker = self.policy.choose(task, self.registry)
        if worker is not None:
            self.dispatch(worker, task)
        elif len(self.queue) >= self.settings.max_queue:
            self.counters["busy"] += 1
            self._answer_error(task.gateway, task.rid, Busy("router queue is full"))
        else:
            self.queue.push(task)

    def _answer_error(self, gateway: bytes | None, rid: Any, exc: TileRouterError) -> None:
        if gateway is None:  # a prefetch: nobody is waiting for it
            return
        self.counters["errors"] += 1
        if isinstance(exc, Timeout):
            self.counters["timeouts"] += 1
        self._send_gateway(gateway, protocol.REPLY, {"rid": rid, "ok": False,
                                                     "error": exc.to_wire()})

    def _send_gateway(self, gateway: bytes, command: bytes, header: dict[str, Any],
                      payload: Any = None) -> None:
        try:
            protocol.send_nowait(self.frontend,
                                 protocol.encode(command, header, payload, gateway))
        except (zmq.Again, zmq.ZMQError) as exc:  # gateway gone or not reading
            self.counters["undeliverable"] += 1
            log.debug("reply to gateway %r dropped: %s", gateway, exc)

    # --- workers --------------------------------------------------------------------------

    def dispatch(self, worker: WorkerState, task: Task) -> None:
        now = time.monotonic()
        if task.slide is not None and task.gateway is not None:
            hit = task.slide in worker.reported
            self.counters["affinity_hits" if hit else "affinity_misses"] += 1
            if self.prefetcher is not None and task.request["op"] == "tile":
                self.prefetcher.note(worker.identity, task.request)
        self.registry.assign(worker, task, now)
        if not self._send_worker(worker, protocol.REQUEST, task.request):
            self.remove_worker(worker.identity, Removal.UNREACHABLE, unsent=task)

    def _send_worker(self, worker: WorkerState, command: bytes, header: dict[str, Any]) -> bool:
        try:
            protocol.send_nowait(self.backend,
                                 protocol.encode(command, header, None, worker.identity))
            return True
        except (zmq.Again, zmq.ZMQError) as exc:
            log.warning("cannot reach worker %r: %s", worker.identity, exc)
            return False

    def on_backend(self, frames: list[zmq.Frame]) -> None:
        try:
            msg = protocol.parse(frames, routed=True)
        except ProtocolError as exc:
            self.counters["malformed"] += 1
            log.warning("malformed message from a worker: %s", exc)
            return
        identity = msg.identity
        assert identity is not None
        if msg.command == protocol.DISCONNECT:
            self.remove_worker(identity, Removal.DISCONNECTED)
            return
        worker = self.registry.get(identity)
        now = time.monotonic()
        if msg.command in (protocol.REGISTER, protocol.HEARTBEAT):
            if worker is None:
                worker = WorkerState(identity)
                self.registry.add(worker)
                log.info("worker %s registered (pid %s, %d open slides)",
                         identity.decode(errors="replace"), msg.header.get("pid"),
                         len(msg.header.get("slides") or ()))
            self._update_worker(worker, msg.header, now)
            self.fill(worker)
        elif msg.command == protocol.REPLY:
            if worker is None:  # e.g. router restarted mid-request: its heartbeat registers it
                self.counters["orphan_replies"] += 1
                return
            self._update_worker(worker, msg.header, now)
            self._forward_reply(worker, msg, now)
            self.fill(worker)
        else:
            log.warning("unexpected %s from worker %r", msg.name, identity)

    def _update_worker(self, worker: WorkerState, header: dict[str, Any], now: float) -> None:
        worker.expiry = now + self.settings.heartbeat_expiry
        worker.update(header, MAX_CAPACITY)
        slides = header.get("slides")
        if isinstance(slides, list):
            self.registry.set_reported(
                worker, frozenset(s for s in slides if isinstance(s, str)))

    def _forward_reply(self, worker: WorkerState, msg: protocol.Message, now: float) -> None:
        tid = msg.header.get("tid")
        task = self.registry.release(worker, tid, now) if isinstance(tid, int) else None
        if task is None or task.answered or task.gateway is None:
            return
        reply = msg.header.get("r")
        if not isinstance(reply, dict):
            self.counters["malformed"] += 1
            reply = {"ok": False, "error": {"code": "internal", "message": "bad worker reply"}}
        if reply.get("ok"):
            self.counters["replies"] += 1
        else:
            self.counters["errors"] += 1
        self._send_gateway(task.gateway, protocol.REPLY, {**reply, "rid": task.rid},
                           msg.payload)

    def fill(self, worker: WorkerState) -> None:
        """Give a worker with room the waiting work the policy picks for it; an idle
        worker with nothing waiting anywhere gets one prefetch."""
        while self.registry.get(worker.identity) is worker:
            task = self.policy.take(worker, self.queue)
            if task is None:
                prefetch_idle(self, worker)
                return
            self.dispatch(worker, task)

    def remove_worker(self, identity: bytes, reason: Removal, unsent: Task | None = None) -> None:
        worker = self.registry.remove(identity)
        if worker is None:
            return
        if self.prefetcher is not None:
            self.prefetcher.forget(identity)
        self.counters["worker_leaves" if reason is Removal.DISCONNECTED
                      else "worker_deaths"] += 1
        tasks = sorted(worker.inflight.values(), key=lambda t: (t is unsent, t.tid))
        log.warning("worker %s removed (%s); requests in flight: %s", identity.decode(
            errors="replace"), reason.value, [t.request.get("request_id") for t in tasks])
        for i, task in enumerate(tasks):
            if reason in (Removal.SILENT, Removal.UNREACHABLE) and i == 0 and task is not unsent:
                task.crashes += 1
                if task.slide is not None and self.quarantine.crashed(task.slide,
                                                                      task.crashes):
                    self._refuse_waiting(task.slide)
            task.worker = None
            if task.answered or task.gateway is None:  # prefetches are not retried
                continue
            task.attempts += task is not unsent  # never reached it: crashed nothing, no try
            if task.attempts > self.settings.max_retries:
                self._answer_error(task.gateway, task.rid,
                                   WorkerLost(f"worker died handling the request ({reason.value})"))
            else:
                self.counters["retries"] += 1
                self.queue.push(task, front=True)
        for other in list(self.registry.workers.values()):
            self.fill(other)

    def _refuse_waiting(self, slide: str) -> None:
        """Answer the waiting requests of a slide just quarantined."""
        for task in [t for t in self.queue if t.slide == slide]:
            self.queue.remove(task)
            self._answer_error(task.gateway, task.rid, Quarantined(
                f"slide {slide!r} crashed workers repeatedly; refused"))

    # --- housekeeping ---------------------------------------------------------------------

    def purge_workers(self, now: float) -> None:
        for worker, reason in self.registry.silent(now, self.settings.heartbeat_expiry):
            self.remove_worker(worker.identity, reason)

    def expire_requests(self, now: float) -> None:
        expired = [t for t in self.queue if t.deadline <= now]
        for task in expired:
            self.queue.remove(task)
        for worker in self.registry.workers.values():
            expired += [t for t in worker.inflight.values()
                        if t.deadline <= now and not t.answered]
        for task in expired:
            task.answered = True
            self._answer_error(task.gateway, task.rid, Timeout("request deadline passed"))

    def send_heartbeats(self) -> None:
        for worker in list(self.registry.workers.values()):  # with the queue's pressure
            if not self._send_worker(worker, protocol.HEARTBEAT, self.queue.pressure()):
                self.remove_worker(worker.identity, Removal.UNREACHABLE)

    def stats(self) -> dict[str, Any]:  # the mmi.stats internal service
        return broker_stats(self)

