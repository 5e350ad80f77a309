"""The router's view of its workers: state, load, and which slides each holds open."""

from __future__ import annotations

import enum
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from config.histogram import Histogram
from router.worker_metrics import WorkerMetrics


class Removal(enum.Enum):
    """Why a worker left the registry. The oldest request a worker received counts as
    having crashed it when it went SILENT or UNREACHABLE; one that said goodbye, or that
    went silent together with every other worker (CUT_OFF), crashed nothing, nor did a
    request that could not even be sent to it (``Broker.remove_worker``'s ``unsent``)."""

    DISCONNECTED = "disconnected"
    SILENT = "heartbeat expired"
    UNREACHABLE = "unreachable"
    CUT_OFF = "every worker silent: the router cut off or stalled"  # crashed nothing either


@dataclass(eq=False)
class Task:
    """One client request travelling through the router."""

    tid: int
    gateway: bytes | None  # None: a prefetch nobody waits for
    rid: Any
    request: dict[str, Any]
    slide: str | None
    deadline: float
    created: float = field(default_factory=time.monotonic)
    attempts: int = 0
    crashes: int = 0
    answered: bool = False
    worker: bytes | None = None


@dataclass(eq=False)
class WorkerState:
    identity: bytes
    pid: int = 0
    host: str = ""
    capacity: int = 1
    expiry: float = 0.0
    reported: frozenset[str] = frozenset()
    inflight: dict[int, Task] = field(default_factory=dict)
    inflight_slides: Counter[str] = field(default_factory=Counter)
    served: int = 0
    dispatched: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    remote: dict[str, Any] = field(default_factory=dict)  # remote stores' counters, as sent
    external: int = 0  # other routers' requests at the worker, as it last reported
    decoded_hits: int = 0  # the worker's decoded stored-tile cache (readers/stored_levels)
    decoded_misses: int = 0
    reader_opens: int = 0
    open_seconds: float = 0.0  # time the worker spent opening slides, as it reported
    busy_since: float | None = None
    busy_seconds: float = 0.0
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)  # render latency, cache bytes
    registered: float = field(default_factory=time.monotonic)
    primary: bool = True  # this router exports the worker's series (workers/worker.py)

    def update(self, header: dict[str, Any], max_capacity: int) -> None:
        """Take the state a worker reports in REGISTER/HEARTBEAT/REPLY headers
        (untrusted: wrong types keep the old values)."""
        if "pid" in header:
            self.pid = _int(header.get("pid"), 0)
            self.host = str(header.get("host", ""))[:255]
            self.capacity = max(1, min(_int(header.get("capacity"), 1), max_capacity))
        self.served = _int(header.get("served"), self.served)
        load, mine = _int(header.get("load"), -1), _int(header.get("mine"), -1)
        if load >= 0 and mine >= 0:  # a worker that serves several routers
            self.external = max(0, min(load - mine, self.capacity))
        self.reader_opens = _int(header.get("opens"), self.reader_opens)
        open_s = header.get("open_s")
        if isinstance(open_s, (int, float)) and not isinstance(open_s, bool) and open_s >= 0:
            self.open_seconds = float(open_s)
        if "m" in header:
            self.metrics.update(header["m"])
        if "primary" in header:
            self.primary = header["primary"] is not False
        cache = header.get("cache")
        if isinstance(cache, dict):
            self.cache_hits = _int(cache.get("hits"), self.cache_hits)
            self.cache_misses = _int(cache.get("misses"), self.cache_misses)
        remote = header.get("remote")
        if isinstance(remote, dict):
            self.remote = remote
        decoded = header.get("decoded")
        if isinstance(decoded, dict):
            self.decoded_hits = _int(decoded.get("hits"), self.decoded_hits)
            self.decoded_misses = _int(decoded.get("misses"), self.decoded_misses)

    @property
    def load(self) -> int:
        """Requests in flight there: ours, plus other routers' as it last reported."""
        return len(self.inflight) + self.external

    @property
    def has_room(self) -> bool:
        return self.load < self.capacity

    @property
    def idle(self) -> bool:
        return self.load == 0

    def holds(self) -> set[str]:
        """Slides open now plus slides it is about to open (requests in flight)."""
        return set(self.reported) | set(self.inflight_slides)


class Registry:
    """Workers by identity, plus an exact slide -> holders index kept in step."""

    def __init__(self) -> None:
        self.workers: dict[bytes, WorkerState] = {}
        self._holders: dict[str, set[bytes]] = {}
        self._held: dict[bytes, set[str]] = {}
        self.queue_wait = Histogram()  # client requests: arrival to dispatch, seconds

    def __len__(self) -> int:
        return len(self.workers)

    def get(self, identity: bytes) -> WorkerState | None:
        return self.workers.get(identity)

    def add(self, worker: WorkerState) -> None:
        self.workers[worker.identity] = worker
        self._reindex(worker)

    def remove(self, identity: bytes) -> WorkerState | None:
        worker = self.workers.pop(identity, None)
        for slide in self._held.pop(identity, set()):
            holders = self._holders.get(slide)
            if holders is not None:
                holders.discard(identity)
                if not holders:
                    del self._holders[slide]
        return worker

    def silent(self, now: float, expiry: float) -> list[tuple[WorkerState, Removal]]:
        """The workers to drop now: those whose heartbeat expired, or, when two or more
        all went silent together (each for over half ``expiry``), every one as CUT_OFF.
        A network cut or a stalled router (SIGSTOP) silences them all at once, and what
        they were rendering must not count as crashing them (quarantine); a slide that
        crashes workers kills one at a time while the others keep talking, or, if it
        killed them all together, was the oldest work of every one."""
        workers = list(self.workers.values())
        expired = [w for w in workers if w.expiry < now]
        if expired and len(workers) > 1 and all(w.expiry - now < expiry / 2 for w in workers):
            # unless every one died on the same slide: a slide that crashes every worker
            # it meets (spread over all of them) must still end in quarantine
            oldest = {min(w.inflight.values(), key=lambda t: t.tid).slide
                      for w in workers if w.inflight}
            if not (len(oldest) == 1 and all(w.inflight for w in workers)):
                return [(w, Removal.CUT_OFF) for w in workers]
        return [(w, Removal.SILENT) for w in expired]

    def holders(self, slide: str) -> list[WorkerState]:
        return [self.workers[i] for i in self._holders.get(slide, ())]

    def set_reported(self, worker: WorkerState, slides: frozenset[str]) -> None:
        if slides != worker.reported:
            worker.reported = slides
            self._reindex(worker)

    def assign(self, worker: WorkerState, task: Task, now: float) -> None:
        if worker.idle:
            worker.busy_since = now
        worker.inflight[task.tid] = task
        task.worker = worker.identity
        worker.dispatched += 1
        if task.gateway is not None:  # a client's request (prefetches wait for nobody)
            self.queue_wait.observe(now - task.created)
        if task.slide is not None:
            worker.inflight_slides[task.slide] += 1
            if task.slide not in self._held.get(worker.identity, ()):
                self._reindex(worker)

    def release(self, worker: WorkerState, tid: int, now: float) -> Task | None:
        task = worker.inflight.pop(tid, None)
        if task is None:
            return None
        task.worker = None
        if task.slide is not None:
            worker.inflight_slides[task.slide] -= 1
            if worker.inflight_slides[task.slide] <= 0:
                del worker.inflight_slides[task.slide]
                if task.slide not in worker.reported:
                    self._reindex(worker)
        if worker.idle and worker.busy_since is not None:
            worker.busy_seconds += now - worker.busy_since
            worker.busy_since = None
        return task

    def _reindex(self, worker: WorkerState) -> None:
        new = worker.holds()
        old = self._held.get(worker.identity, set())
        for slide in old - new:
            holders = self._holders.get(slide)
            if holders is not None:
                holders.discard(worker.identity)
                if not holders:
                    del self._holders[slide]
        for slide in new - old:
            self._holders.setdefault(slide, set()).add(worker.identity)
        self._held[worker.identity] = new


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default
