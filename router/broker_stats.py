"""The broker's ``mmi.stats`` and ``mmi.ready`` answers.

``mmi.stats`` is a JSON snapshot of workers and routing counters; the router's stats
port serves it as ``/stats`` and turns it into Prometheus metrics (``router.metrics``),
so the latency histograms travel in it too.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from router.broker import Broker


def broker_stats(broker: Broker) -> dict[str, Any]:
    """What ``mmi.stats`` answers: every worker's state and the routing counters."""
    now = time.monotonic()
    c = broker.counters
    workers = []
    for w in broker.registry.workers.values():
        busy = w.busy_seconds + (now - w.busy_since if w.busy_since is not None else 0.0)
        workers.append({
            "id": w.identity.decode(errors="replace"),
            "pid": w.pid,
            "host": w.host,
            "state": "idle" if w.idle else ("busy" if not w.has_room else "working"),
            "inflight": w.load,
            "capacity": w.capacity,
            "served": w.served,
            "primary": w.primary,
            "dispatched": w.dispatched,
            "open_slides": sorted(w.reported),
            "tile_cache": {"hits": w.cache_hits, "misses": w.cache_misses,
                           "bytes": w.metrics.tile_cache_bytes},
            "decoded_cache": {"hits": w.decoded_hits, "misses": w.decoded_misses,
                              "bytes": w.metrics.decoded_cache_bytes},
            "reader_opens": w.reader_opens,
            **w.metrics.to_stats(),
            **({"remote": w.remote} if w.remote else {}),
            "busy_seconds": round(busy, 3),
            "age_seconds": round(now - w.registered, 3),
        })
    return {
        "workers": workers,
        "shard": broker.shard.snapshot(now),
        "routing": {
            "policy": broker.policy.name,
            "requests": c["requests"],
            "replies": c["replies"],
            "errors": c["errors"],
            "timeouts": c["timeouts"],
            "waiting": len(broker.queue),
            "inflight": broker.inflight_count(),
            "queue_wait_seconds": broker.registry.queue_wait.to_wire(),
            "affinity_hits": c["affinity_hits"],
            "affinity_misses": c["affinity_misses"],
            "retries": c["retries"],
            "prefetches": c["prefetches"],
            "busy": c["busy"],
            "worker_deaths": c["worker_deaths"],
            "malformed": c["malformed"],
            "undeliverable": c["undeliverable"],
            "idle_worker_seconds_waiting": round(broker.idle_worker_seconds_waiting, 3),
            "quarantined": broker.quarantine.slides(),
            "quarantines": broker.quarantine.quarantines,
            "uptime_seconds": round(now - broker.started, 3),
        },
    }


def broker_ready(broker: Broker) -> dict[str, Any]:
    """What ``mmi.ready`` answers: ready when at least one worker is registered (the
    gateway's ``/readyz`` asks; a router without workers can only queue, then time out)."""
    workers = len(broker.registry.workers)
    return {"ready": workers > 0 and not broker.stop.is_set(), "workers": workers}
