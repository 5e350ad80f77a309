"""The broker's ``mmi.stats`` answer: a JSON snapshot of workers and routing counters."""

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
            "dispatched": w.dispatched,
            "open_slides": sorted(w.reported),
            "tile_cache": {"hits": w.cache_hits, "misses": w.cache_misses},
            "decoded_cache": {"hits": w.decoded_hits, "misses": w.decoded_misses},
            "reader_opens": w.reader_opens,
            **({"remote": w.remote} if w.remote else {}),
            "busy_seconds": round(busy, 3),
            "age_seconds": round(now - w.registered, 3),
        })
    return {
        "workers": workers,
        "routing": {
            "policy": broker.policy.name,
            "requests": c["requests"],
            "replies": c["replies"],
            "errors": c["errors"],
            "timeouts": c["timeouts"],
            "waiting": len(broker.queue),
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
            "uptime_seconds": round(now - broker.started, 3),
        },
    }
