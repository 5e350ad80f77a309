"""The router's ``/metrics``: its ``mmi.stats`` snapshot in the Prometheus text format.

The broker loop already publishes a fresh snapshot every heartbeat (``Broker.snapshot``,
replaced wholesale, so the stats thread reads it without a lock); this collector only
translates it at scrape time, so routing pays nothing per request for metrics beyond the
plain-int queue-wait histogram. Per-worker series are labelled by the worker's host and
pid (bounded by the workers alive; a restarted worker is a new series), remote-store
series by store name; never a slide id or a client address. With several routers only a
worker's primary router (its first connected one) exports its series, so a sum over
routers counts each worker once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from config.histogram import Histogram

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# routing counters of the snapshot: (snapshot key, metric name without prefix, help)
_ROUTING_COUNTERS = (
    ("requests", "requests", "client requests received by the router"),
    ("replies", "replies", "successful replies forwarded to gateways"),
    ("errors", "errors", "error replies sent to gateways (router's and workers')"),
    ("timeouts", "timeouts", "requests answered 'timeout'"),
    ("busy", "rejected_busy", "requests refused because the wait queue was full"),
    ("retries", "retries", "requests re-sent after their worker died"),
    ("worker_deaths", "worker_deaths", "workers dropped as dead (silent or unreachable)"),
    ("prefetches", "prefetches", "neighbour tiles sent to idle workers"),
    ("quarantines", "quarantines", "slides quarantined after crashing workers"),
    ("malformed", "malformed", "malformed messages dropped"),
    ("undeliverable", "undeliverable", "replies a gateway could not take"),
)
# per-worker remote store counters: (key in the worker's remote report, metric, help)
_REMOTE_COUNTERS = (
    ("round_trips", "round_trips", "remote store round trips"),
    ("ranged_requests", "ranged_requests", "ranged GETs"),
    ("ranged_bytes", "ranged_bytes", "bytes read by ranged GETs"),
    ("errors", "errors", "failed remote calls"),
    ("remote_seconds", "seconds", "seconds spent in remote calls"),
)


def histogram_family(name: str, doc: str, labels: list[str],
                     series: list[tuple[list[str], Histogram]]) -> HistogramMetricFamily:
    """One Prometheus histogram family from plain-int histograms."""
    family = HistogramMetricFamily(name, doc, labels=labels)
    for values, hist in series:
        family.add_metric(values, hist.cumulative(), hist.sum)
    return family


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


class RouterCollector(Collector):
    """Reads ``snapshot()`` (the broker's published stats) on every scrape."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot() or {}
        routing = snap.get("routing") or {}
        workers = snap.get("workers") or []
        yield from _routing(routing, len(workers))
        yield from _workers(workers)


def _num(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _routing(routing: dict[str, Any], workers: int) -> Iterator[Metric]:
    p = "tilerouter_router_"
    for key, name, doc in _ROUTING_COUNTERS:
        yield CounterMetricFamily(p + name, doc, value=_num(routing.get(key)))
    policy = str(routing.get("policy", ""))
    affinity = CounterMetricFamily(p + "affinity", "requests sent to a worker that held "
                                   "(hit) or did not hold (miss) the slide",
                                   labels=["policy", "result"])
    affinity.add_metric([policy, "hit"], _num(routing.get("affinity_hits")))
    affinity.add_metric([policy, "miss"], _num(routing.get("affinity_misses")))
    yield affinity
    yield GaugeMetricFamily(p + "queue_depth", "requests waiting for a worker",
                            value=_num(routing.get("waiting")))
    yield GaugeMetricFamily(p + "inflight", "requests at workers",
                            value=_num(routing.get("inflight")))
    yield GaugeMetricFamily(p + "workers", "workers registered", value=workers)
    yield GaugeMetricFamily(p + "quarantined_slides", "slides refused right now",
                            value=len(routing.get("quarantined") or ()))
    yield CounterMetricFamily(p + "idle_worker_seconds_waiting",
                              "worker-seconds idle while requests waited",
                              value=_num(routing.get("idle_worker_seconds_waiting")))
    wait = Histogram.from_wire(routing.get("queue_wait_seconds")) or Histogram()
    yield histogram_family(p + "queue_wait_seconds",
                           "client requests: arrival at the router to dispatch", [],
                           [([], wait)])


def _workers(workers: list[dict[str, Any]]) -> Iterator[Metric]:
    p = "tilerouter_worker_"
    labels = ["host", "worker"]
    fam = {
        "served": CounterMetricFamily(p + "served", "requests a worker answered", labels=labels),
        "inflight": GaugeMetricFamily(p + "inflight", "requests at the worker", labels=labels),
        "capacity": GaugeMetricFamily(p + "capacity", "requests it takes at once",
                                      labels=labels),
        "open_slides": GaugeMetricFamily(p + "open_slides", "slides it holds open",
                                         labels=labels),
        "reader_opens": CounterMetricFamily(p + "reader_opens", "slide opens", labels=labels),
        "busy_seconds": CounterMetricFamily(p + "busy_seconds", "seconds with work in flight",
                                            labels=labels),
    }
    cache_labels = [*labels, "cache"]
    hits = CounterMetricFamily(p + "cache_hits", "tile / decoded stored-tile cache hits",
                               labels=cache_labels)
    misses = CounterMetricFamily(p + "cache_misses", "tile / decoded stored-tile cache "
                                 "misses", labels=cache_labels)
    size = GaugeMetricFamily(p + "cache_bytes", "bytes held by the tile / decoded caches",
                             labels=cache_labels)
    remote_labels = [*labels, "store"]
    remote = {key: CounterMetricFamily(f"tilerouter_remote_{name}", doc, labels=remote_labels)
              for key, name, doc in _REMOTE_COUNTERS}
    renders = []
    for w in workers:
        if w.get("primary") is False:  # another router exports it: sums count it once
            continue
        values = [str(w.get("host", "")), str(w.get("pid", ""))]
        fam["served"].add_metric(values, _num(w.get("served")))
        fam["inflight"].add_metric(values, _num(w.get("inflight")))
        fam["capacity"].add_metric(values, _num(w.get("capacity")))
        fam["open_slides"].add_metric(values, len(w.get("open_slides") or ()))
        fam["reader_opens"].add_metric(values, _num(w.get("reader_opens")))
        fam["busy_seconds"].add_metric(values, _num(w.get("busy_seconds")))
        for cache in ("tile", "decoded"):
            c = w.get(f"{cache}_cache") or {}
            hits.add_metric([*values, cache], _num(c.get("hits")))
            misses.add_metric([*values, cache], _num(c.get("misses")))
            size.add_metric([*values, cache], _num(c.get("bytes")))
        for store, counters in (w.get("remote") or {}).items():
            if store == "fetch_cache" or not isinstance(counters, dict):
                continue
            for key, family in remote.items():
                family.add_metric([*values, str(store)], _num(counters.get(key)))
        hist = Histogram.from_wire(w.get("render_seconds"))
        if hist is not None:
            renders.append((values, hist))
    yield from fam.values()
    yield from (hits, misses, size)
    yield from remote.values()
    yield histogram_family(p + "render_seconds", "a worker's time per request handled "
                           "(cache hits included)", labels, renders)


def router_registry(snapshot: Callable[[], dict[str, Any]]) -> CollectorRegistry:
    """A registry with the router's metrics and its process' (CPU, memory, fds)."""
    from prometheus_client import ProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(RouterCollector(snapshot))
    ProcessCollector(namespace="tilerouter_router", registry=registry)
    return registry
