"""Metrics primitives: plain-int histograms and the router's Prometheus translation of
its stats snapshot (a real Broker's ``broker_stats``)."""

from __future__ import annotations

from pathlib import Path

import zmq
from prometheus_client.parser import text_string_to_metric_families

from config.histogram import BUCKETS, Histogram
from config.settings import Settings
from router.broker import Broker
from router.broker_stats import broker_ready
from router.metrics import render, router_registry
from router.registry import Task, WorkerState


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_histogram_buckets_are_upper_bounds_and_round_trip() -> None:
    h = Histogram()
    for seconds in (0.0, 0.001, 0.0011, 0.05, 9.9, 11.0):
        h.observe(seconds)
    cumulative = dict(h.cumulative())
    assert cumulative["0.001"] == 2  # le is "<=": 1 ms itself is in the 1 ms bucket
    assert cumulative["0.002"] == 3
    assert cumulative["0.05"] == 4
    assert cumulative["10.0"] == 5 and cumulative["+Inf"] == 6 == h.count
    back = Histogram.from_wire(h.to_wire())
    assert back is not None and back.counts == h.counts
    assert abs(back.sum - h.sum) < 1e-6
    assert len(BUCKETS) == 13 and BUCKETS[0] == 0.001 and BUCKETS[-1] == 10.0


def test_malformed_wire_histograms_are_ignored() -> None:
    for bad in (None, [], {"b": [1, 2], "s": 0}, {"b": [-1] * 14, "s": 0},
                {"b": [0] * 14, "s": "x"}, {"b": ["1"] * 14, "s": 0}):
        assert Histogram.from_wire(bad) is None
    worker = WorkerState(b"w")
    worker.update({"m": {"render": {"b": [1, 2]}, "tile_cache_bytes": -5}}, 64)
    assert worker.metrics.render.count == 0 and worker.metrics.tile_cache_bytes == 0


def test_router_metrics_from_a_real_broker(tmp_path: Path) -> None:
    settings = Settings(frontend=f"ipc://{tmp_path}/f.ipc", backend=f"ipc://{tmp_path}/b.ipc")
    broker = Broker(settings, zmq.Context())
    try:
        assert broker_ready(broker) == {"ready": False, "workers": 0}
        worker = WorkerState(b"w-1")
        worker.update({"pid": 4242, "host": "h1", "capacity": 2, "served": 7, "opens": 3,
                       "cache": {"hits": 5, "misses": 2},
                       "remote": {"archive": {"round_trips": 9, "ranged_bytes": 100}},
                       "m": {"render": {"b": [3] + [0] * 13, "s": 0.002},
                             "tile_cache_bytes": 1234}}, 64)
        broker.registry.add(worker)
        broker.registry.set_reported(worker, frozenset({"secret-study/a.svs"}))
        broker.registry.assign(worker, Task(1, b"gw", 1, {"op": "tile"}, "secret-study/a.svs",
                                            deadline=1e12, created=0.0), 0.004)
        broker.counters["affinity_hits"] += 1
        assert broker_ready(broker) == {"ready": True, "workers": 1}
        text = render(router_registry(broker.stats))
    finally:
        broker.close()
    got = samples(text)
    w = (("host", "h1"), ("worker", "4242"))
    assert got[("tilerouter_worker_served_total", w)] == 7
    assert got[("tilerouter_worker_open_slides", w)] == 1
    assert got[("tilerouter_worker_inflight", w)] == 1
    assert got[("tilerouter_worker_cache_bytes", (("cache", "tile"), *w))] == 1234
    assert got[("tilerouter_worker_render_seconds_count", w)] == 3
    assert got[("tilerouter_remote_round_trips_total",
                (*w[:1], ("store", "archive"), w[1]))] == 9
    assert got[("tilerouter_router_affinity_total",
                (("policy", "cache-aware"), ("result", "hit")))] == 1
    assert got[("tilerouter_router_workers", ())] == 1
    # queue wait: created at 0, dispatched at 4 ms
    assert got[("tilerouter_router_queue_wait_seconds_bucket", (("le", "0.005"),))] == 1
    assert got[("tilerouter_router_queue_wait_seconds_bucket", (("le", "0.002"),))] == 0
    assert b"secret-study" not in text  # never a slide id in a label


def test_a_router_exports_only_the_workers_it_is_primary_for(tmp_path: Path) -> None:
    """With several routers every worker registers with all of them; only its primary
    router (the worker says which) exports its series, so a sum over routers counts each
    worker once. A worker that says nothing (one router) is exported."""
    settings = Settings(frontend=f"ipc://{tmp_path}/f.ipc", backend=f"ipc://{tmp_path}/b.ipc")
    broker = Broker(settings, zmq.Context())
    try:
        for name, pid, primary in ((b"w-1", 11, True), (b"w-2", 12, False), (b"w-3", 13, None)):
            worker = WorkerState(name)
            header = {"pid": pid, "host": "h", "capacity": 2, "served": pid}
            if primary is not None:
                header["primary"] = primary
            worker.update(header, 64)
            broker.registry.add(worker)
        text = render(router_registry(broker.stats))
        workers = {w["pid"]: w["primary"] for w in broker.stats()["workers"]}
    finally:
        broker.close()
    got = samples(text)
    served = {dict(labels)["worker"]: value for (name, labels), value in got.items()
              if name == "tilerouter_worker_served_total"}
    assert served == {"11": 11, "13": 13}
    assert got[("tilerouter_router_workers", ())] == 3  # the router's own view: all of them
    assert workers == {11: True, 12: False, 13: True}  # /stats keeps them all
