"""The gateway's ``/metrics``: plain ints on the hot path, Prometheus text at scrape time.

Why not prometheus_client's own Counter/Histogram: a labelled ``inc`` plus ``observe``
cost about 4 us per request here (5 us in its multiprocess mode, which also writes an
mmap'd file per increment), against 0.4 us for a dict increment plus a bisect; a gateway
answers a hot tile in tens of microseconds, so that was the difference between about 5 %
and under 1 % of its CPU. prometheus_client still formats the output
(``GatewayCollector`` yields its metric families).

Several gateway processes share one port (``serve --gateways N``, SO_REUSEPORT), and a
scrape reaches any one of them. So each process writes its counters to
``metrics_dir/gateway-<pid>.json`` every FLUSH_EVERY seconds (one small atomic file
write; ``serve`` makes the directory), and the process that is scraped first writes its
own, then sums every file: the scrape sees all processes, each at most FLUSH_EVERY old.
Reading only files, never mixing a fresh in-memory view with the others' older ones,
keeps every counter monotonic from one scrape to the next whichever process answers.
As in prometheus_client's multiprocess mode, counters of processes that have exited are
kept (a restarted gateway does not reset the totals) and gauges count live processes
only. Without ``metrics_dir`` (one gateway alone) the scrape reads memory directly.

Labels are bounded: op, format and outcome come from validated requests (outcome is
``ok`` or an error code); never a slide id, token or client address.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from config.histogram import Histogram
from router.metrics import CONTENT_TYPE, histogram_family

if TYPE_CHECKING:
    from wsgateway.gateway import Gateway

log = logging.getLogger(__name__)

__all__ = ["CONTENT_TYPE", "FLUSH_EVERY", "GatewayMetrics", "MetricsExporter"]

FLUSH_EVERY = 0.5  # seconds between a process' snapshot files
_FILE_PREFIX = "gateway-"

# gateway counters taken from Gateway.snapshot_counters() (name, help)
_COUNTERS = (
    ("hot_hits", "tiles answered from the hot-tile cache"),
    ("hot_misses", "tile requests the hot-tile cache did not hold (relayed)"),
    ("coalesced", "requests that waited for an identical request in flight"),
    ("stored_hits", "tiles the gateway read from the slide file itself"),
    ("router_reconnects", "router connections rebuilt after silence"),
    ("router_resent", "requests re-sent to another router"),
    ("discarded", "replies dropped because the client had gone"),
)
_GAUGES = (
    ("connections", "open websocket connections"),
    ("inflight", "requests relayed to the router and not yet answered"),
    ("hot_bytes", "bytes in the hot-tile cache"),
    ("router_up", "1 while a router answers heartbeats"),
)


class GatewayMetrics:
    """What one gateway process counts per request (plain ints, no locks: one thread)."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str], int] = {}  # (op, format, outcome) -> n
        self.latency: dict[str, Histogram] = {}  # op -> end-to-end seconds
        self.rejected: dict[str, int] = {}  # error code -> requests refused at the edge

    def done(self, request: dict[str, Any], outcome: str, started: float) -> None:
        """A validated request was answered: ``outcome`` is "ok" or the error code,
        ``started`` its time.monotonic() on arrival."""
        op = request.get("op", "")
        key = (op, request.get("format") or "none", outcome)
        self.requests[key] = self.requests.get(key, 0) + 1
        hist = self.latency.get(op)
        if hist is None:
            hist = self.latency[op] = Histogram()
        hist.observe(time.monotonic() - started)

    def reject(self, code: str) -> None:
        """A request refused before it was accepted (malformed, rate limit, busy, auth)."""
        self.rejected[code] = self.rejected.get(code, 0) + 1


class MetricsExporter:
    """Snapshots of one gateway's metrics, shared with sibling processes through files."""

    def __init__(self, gateway: Gateway, directory: str = "") -> None:
        self.gateway = gateway
        self.directory = directory
        self.pid = os.getpid()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(GatewayCollector(self))

    def snapshot(self) -> dict[str, Any]:
        m, g = self.gateway.metrics, self.gateway
        return {
            "pid": self.pid,
            "requests": [[*key, n] for key, n in m.requests.items()],
            "latency": {op: h.to_wire() for op, h in m.latency.items()},
            "rejected": dict(m.rejected),
            "counters": g.snapshot_counters(),
            "gauges": g.snapshot_gauges(),
        }

    def flush(self) -> None:
        """Write this process' snapshot (atomically: readers see old or new, never half)."""
        if not self.directory:
            return
        path = os.path.join(self.directory, f"{_FILE_PREFIX}{self.pid}.json")
        tmp = f"{path}.tmp"
        try:
            with open(tmp, "w") as fh:
                json.dump(self.snapshot(), fh, separators=(",", ":"))
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("cannot write metrics snapshot: %s", exc)

    def snapshots(self) -> list[tuple[dict[str, Any], bool]]:
        """(snapshot, alive) of every gateway process, this one freshly flushed."""
        if not self.directory:
            return [(self.snapshot(), True)]
        self.flush()
        out = []
        with contextlib.suppress(OSError):
            for name in sorted(os.listdir(self.directory)):
                if not (name.startswith(_FILE_PREFIX) and name.endswith(".json")):
                    continue
                try:
                    with open(os.path.join(self.directory, name)) as fh:
                        snap = json.load(fh)
                except (OSError, ValueError):
                    continue  # a file being replaced right now: its next scrape counts
                if isinstance(snap, dict):
                    out.append((snap, _alive(snap.get("pid"))))
        return out

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _int(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


class GatewayCollector(Collector):
    """Sums every gateway process' snapshot into metric families at scrape time."""

    def __init__(self, exporter: MetricsExporter) -> None:
        self.exporter = exporter

    def collect(self) -> Iterator[Metric]:
        requests: dict[tuple[str, str, str], float] = {}
        latency: dict[str, Histogram] = {}
        rejected: dict[str, float] = {}
        counters: dict[str, float] = {}
        gauges: dict[str, float] = {}
        live = 0
        for snap, alive in self.exporter.snapshots():
            live += alive
            for row in snap.get("requests") or ():
                if isinstance(row, list) and len(row) == 4:
                    key = (str(row[0]), str(row[1]), str(row[2]))
                    requests[key] = requests.get(key, 0) + _int(row[3])
            for op, wire in (snap.get("latency") or {}).items():
                hist = Histogram.from_wire(wire)
                if hist is not None:
                    latency.setdefault(str(op), Histogram()).add(hist)
            for code, n in (snap.get("rejected") or {}).items():
                rejected[str(code)] = rejected.get(str(code), 0) + _int(n)
            for name, n in (snap.get("counters") or {}).items():
                counters[name] = counters.get(name, 0) + _int(n)
            if alive:
                for name, n in (snap.get("gauges") or {}).items():
                    gauges[name] = gauges.get(name, 0) + _int(n)
        p = "tilerouter_gateway_"
        fam = CounterMetricFamily(p + "requests", "requests answered, by op, format and "
                                  "outcome (ok or the error code)",
                                  labels=["op", "format", "outcome"])
        for key, n in sorted(requests.items()):
            fam.add_metric(list(key), n)
        yield fam
        yield histogram_family(p + "request_seconds", "end-to-end: request accepted to "
                               "reply ready (hot and stored tiles included)", ["op"],
                               [([op], h) for op, h in sorted(latency.items())])
        fam = CounterMetricFamily(p + "rejected", "requests refused at the edge, by error "
                                  "code (bad_request, rate_limited, busy, unauthorized, ...)",
                                  labels=["code"])
        for code, n in sorted(rejected.items()):
            fam.add_metric([code], n)
        yield fam
        for name, doc in _COUNTERS:
            yield CounterMetricFamily(p + name, doc, value=counters.get(name, 0))
        for name, doc in _GAUGES:
            yield GaugeMetricFamily(p + name, doc, value=gauges.get(name, 0))
        yield GaugeMetricFamily(p + "processes", "gateway processes alive", value=live)
