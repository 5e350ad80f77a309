"""Routing policies: pure decisions over the registry and wait queue (unit-testable).

``choose`` places a new request (or returns None: it waits); ``take`` gives a worker
that just freed a slot its next waiting request. Every policy is work conserving:
an idle worker always takes the oldest waiting request.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from router.registry import Registry, Task, WorkerState
from router.waiting import WaitQueue


def rendezvous_score(slide: str, identity: bytes) -> int:
    """Highest-random-weight hash: the idle worker that adopts a slide is stable (and,
    in wsgateway/router_pool.py, the router whose shard a slide is in)."""
    digest = hashlib.blake2b(slide.encode() + b"\0" + identity, digest_size=8).digest()
    return int.from_bytes(digest, "big")


OPENS_WORTH = 5  # cache-aware: affinity may hold a request this many slide opens longer
MAX_ADAPTED_WAIT = 2.0  # seconds


class Policy:
    name = "base"

    def choose(self, task: Task, registry: Registry) -> WorkerState | None:
        raise NotImplementedError

    def take(self, worker: WorkerState, queue: WaitQueue, now: float | None = None
             ) -> Task | None:
        """Oldest waiting request, if the worker has room (FIFO policies)."""
        return queue.pop_oldest() if worker.has_room else None

    def adapt(self, registry: Registry) -> None:
        """Follow what the workers report (called about once a heartbeat)."""


class CacheAwarePolicy(Policy):
    """Affinity to a holder with room; else an idle worker adopts (rendezvous hash).

    A hot slide spreads naturally: when its holders are saturated, an idle worker
    adopts it and becomes a holder too. Decisions are O(holders + idle).

    Affinity is bounded in time, relative to the queue: a freed slot takes work for its
    own slides unless the oldest waiting request has waited ``max_affinity_wait`` longer
    than the worker's own oldest; with nothing of its own waiting it takes the oldest at
    once (no slot stays empty while work waits). So a slide nobody holds is never
    starved by a hot slide keeping every worker busy, while a deep but fair backlog
    (saturation) keeps every request on its holder: an absolute bound there turned
    routing into FIFO and reader opens went up 10x.
    """

    name = "cache-aware"

    def __init__(self, max_affinity_wait: float = 0.1) -> None:
        self.base_wait = max_affinity_wait
        self.max_affinity_wait = max_affinity_wait

    def adapt(self, registry: Registry) -> None:
        """The affinity bound is worth at least ``OPENS_WORTH`` slide opens, at what an open
        costs the workers now: a slide from a remote store takes round trips to open
        (0.1-0.2 s at 20 ms RTT) and every needless open also evicts another slide's
        fetched data, where a local open costs a few ms. Capped at ``MAX_ADAPTED_WAIT``."""
        opened = sum(w.reader_opens for w in registry.workers.values())
        seconds = sum(w.open_seconds for w in registry.workers.values())
        mean = seconds / opened if opened else 0.0
        self.max_affinity_wait = max(self.base_wait, min(MAX_ADAPTED_WAIT, OPENS_WORTH * mean))

    def choose(self, task: Task, registry: Registry) -> WorkerState | None:
        if task.slide is not None:
            ready = [w for w in registry.holders(task.slide) if w.has_room]
            if ready:
                least = min(w.load for w in ready)
                ready = [w for w in ready if w.load == least]
                if len(ready) == 1:
                    return ready[0]
                # equally loaded holders: the same one for the same neighbourhood of
                # tiles, so a repeat (or a prefetched neighbour) finds its tile cached
                region = _region(task)
                return max(ready, key=lambda w: rendezvous_score(region, w.identity))
        idle = [w for w in registry.workers.values() if w.idle]
        if not idle:
            return None
        key = task.slide or ""
        return max(idle, key=lambda w: rendezvous_score(key, w.identity))

    def take(self, worker: WorkerState, queue: WaitQueue, now: float | None = None
             ) -> Task | None:
        if not worker.has_room:
            return None
        oldest = queue.peek_oldest()
        if oldest is None:
            return None
        own = queue.peek_for_slides(worker.holds())
        # how much longer the oldest request has waited than the one affinity would pick
        if own is not None and own.created - oldest.created < self.max_affinity_wait:
            queue.remove(own)
            return own
        return queue.pop_oldest()


class RoundRobinPolicy(Policy):
    """Next worker in rotation that has room; slides ignored (baseline)."""

    name = "round-robin"

    def __init__(self) -> None:
        self._turn = 0

    def choose(self, task: Task, registry: Registry) -> WorkerState | None:
        workers = list(registry.workers.values())
        for i in range(len(workers)):
            worker = workers[(self._turn + i) % len(workers)]
            if worker.has_room:
                self._turn = (self._turn + i + 1) % len(workers)
                return worker
        return None


class LeastLoadedPolicy(Policy):
    """Worker with the fewest requests in flight; slides ignored (baseline)."""

    name = "least-loaded"

    def choose(self, task: Task, registry: Registry) -> WorkerState | None:
        return _least_loaded(w for w in registry.workers.values() if w.has_room)


REGION_TILES = 4  # tiles per side of the neighbourhood kept on one holder


def _region(task: Task) -> str:
    req = task.request
    if req.get("op") != "tile":
        return task.slide or ""
    return (f"{task.slide}\0{req.get('level')}\0{int(req.get('col', 0)) // REGION_TILES}"
            f"\0{int(req.get('row', 0)) // REGION_TILES}")


def _least_loaded(workers: Iterable[WorkerState]) -> WorkerState | None:
    return min(workers, key=lambda w: w.load, default=None)


POLICIES: dict[str, type[Policy]] = {
    p.name: p for p in (CacheAwarePolicy, RoundRobinPolicy, LeastLoadedPolicy)
}


def make_policy(name: str, max_affinity_wait: float = 0.1) -> Policy:
    if name == CacheAwarePolicy.name:
        return CacheAwarePolicy(max_affinity_wait)
    return POLICIES[name]()
