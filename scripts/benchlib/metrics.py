"""What one run measured: client-side latency/throughput plus /stats deltas over the run."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .cpu import CpuUsage
from .load import LoadResult

# per-worker counter of reader opens (older checkouts: none), in the order we look for it
OPENS_FIELDS = ("reader_opens", "opens")


@dataclass(frozen=True)
class ServerDelta:
    """Router/worker/gateway counters: after minus before."""

    router_requests: int
    worker_deaths: int
    prefetches: int
    affinity_hits: int
    affinity_misses: int
    cache_hits: int
    cache_misses: int
    decoded_hits: int  # decoded stored-tile caches (0 and 0 on older servers)
    decoded_misses: int
    opens: int | None  # None: /stats does not expose reader opens
    busy_seconds: tuple[float, ...]  # per worker
    idle_worker_seconds_waiting: float
    gateway_hot_hits: int | None  # None: no hot-tile cache in this gateway
    gateway_coalesced: int | None


@dataclass(frozen=True)
class RunSummary:
    label: dict[str, str]  # configuration columns
    tiles: int
    tiles_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int]
    unique_tiles: int
    unique_mb: float
    affinity_ratio: float | None
    cache_ratio: float | None
    decoded_ratio: float | None
    gateway_ratio: float | None  # answered by the gateway: hot-tile hits + coalesced
    opens_per_1000: float | None
    busy_max: float
    busy_mean: float
    idle_wait: float
    wall_s: float
    cpu: CpuUsage | None  # cores busy during the load: server, load generator, other
    extra: dict[str, Any] = field(default_factory=dict)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (nan when empty)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), math.ceil(q / 100.0 * len(sorted_values))))
    return sorted_values[rank - 1]


def _workers_by_id(stats: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(w["id"]): w for w in stats.get("workers", [])}


def _worker_delta(after: dict[str, Any], before: dict[str, Any] | None, path: str) -> float:
    """after - before of a (dotted) per-worker counter; a worker new since 'before' counts
    from zero."""
    def get(w: dict[str, Any] | None) -> float:
        value: Any = w or {}
        for key in path.split("."):
            value = value.get(key, 0) if isinstance(value, dict) else 0
        return float(value or 0)
    return get(after) - get(before)


def _opens_field(workers: list[dict[str, Any]]) -> str | None:
    for name in OPENS_FIELDS:
        if workers and all(name in w for w in workers):
            return name
    return None


def server_delta(before: dict[str, Any], after: dict[str, Any]) -> ServerDelta:
    """Counters over the run. Workers that died during it lose their counts (noted by the
    caller through routing.worker_deaths)."""
    wb, wa = _workers_by_id(before), _workers_by_id(after)
    rb, ra = before.get("routing", {}), after.get("routing", {})
    gb, ga = before.get("gateway", {}), after.get("gateway", {})

    def total(path: str) -> int:
        return int(sum(_worker_delta(w, wb.get(i), path) for i, w in wa.items()))

    def routing(key: str) -> float:
        return float(ra.get(key, 0)) - float(rb.get(key, 0))

    def gateway(key: str) -> int | None:
        return int(ga[key] - gb.get(key, 0)) if key in ga else None

    opens_key = _opens_field(list(wa.values()))
    return ServerDelta(
        router_requests=int(routing("requests")),
        worker_deaths=int(routing("worker_deaths")),
        prefetches=int(routing("prefetches")),
        affinity_hits=int(routing("affinity_hits")),
        affinity_misses=int(routing("affinity_misses")),
        cache_hits=total("tile_cache.hits"),
        cache_misses=total("tile_cache.misses"),
        decoded_hits=total("decoded_cache.hits"),
        decoded_misses=total("decoded_cache.misses"),
        opens=total(opens_key) if opens_key else None,
        busy_seconds=tuple(_worker_delta(w, wb.get(i), "busy_seconds") for i, w in wa.items()),
        idle_worker_seconds_waiting=routing("idle_worker_seconds_waiting"),
        gateway_hot_hits=gateway("hot_hits"),
        gateway_coalesced=gateway("coalesced"),
    )


def ratio(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


def summarize(label: dict[str, str], load: LoadResult, delta: ServerDelta,
              cpu: CpuUsage | None, wall_s: float) -> RunSummary:
    lat = sorted(load.latencies_ms)
    busy = delta.busy_seconds or (0.0,)
    saved = None
    if delta.gateway_hot_hits is not None:
        saved = delta.gateway_hot_hits + (delta.gateway_coalesced or 0)
    return RunSummary(
        label=label,
        tiles=load.ok,
        tiles_per_s=load.ok / load.elapsed if load.elapsed > 0 else 0.0,
        p50_ms=percentile(lat, 50),
        p95_ms=percentile(lat, 95),
        p99_ms=percentile(lat, 99),
        max_ms=lat[-1] if lat else float("nan"),
        errors=dict(Counter(load.errors).most_common()),
        unique_tiles=len(load.unique),
        unique_mb=sum(load.unique.values()) / 1e6,
        affinity_ratio=ratio(delta.affinity_hits, delta.affinity_hits + delta.affinity_misses),
        cache_ratio=ratio(delta.cache_hits, delta.cache_hits + delta.cache_misses),
        decoded_ratio=ratio(delta.decoded_hits, delta.decoded_hits + delta.decoded_misses),
        gateway_ratio=ratio(saved, load.ok + sum(load.errors.values())) if saved is not None
        else None,
        opens_per_1000=1000.0 * delta.opens / load.ok if delta.opens is not None and load.ok
        else None,
        busy_max=max(busy),
        busy_mean=sum(busy) / len(busy),
        idle_wait=delta.idle_worker_seconds_waiting,
        wall_s=wall_s,
        cpu=cpu,
        extra={"router_requests": delta.router_requests, "worker_deaths": delta.worker_deaths,
               "prefetches": delta.prefetches, "elapsed_s": load.elapsed,
               "mbytes": load.bytes / 1e6},
    )
