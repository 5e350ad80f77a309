"""A real Prometheus (Debian's, installed by scripts/setup) scrapes a running
``tilerouter serve`` (two gateways sharing a port, the router's stats port) every second;
after a load whose tiles the test counts, its HTTP API must show the series, and
``increase()`` of tiles served must match the count. The shipped alerting rules are
loaded and evaluated, and every expression of the shipped Grafana dashboard runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO, WSClient, free_port, start_serve, stop_serve, wait_for

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
DEPLOY = REPO / "scripts" / "deploy" / "prometheus"
TILE_SERIES = 'tilerouter_gateway_requests_total{op="tile",outcome="ok"}'
TILES_OK = f"sum({TILE_SERIES})"
LOAD_TILES = [(slide, level, col, row) for slide in ("a.tiff", "sub/b.tiff", "c.tiff")
              for level, col, row in ((8, 0, 0), (9, 0, 0), (10, 0, 0), (10, 1, 0), (10, 0, 1),
                                      (10, 1, 1))]

pytestmark = pytest.mark.skipif(
    not Path(PROMETHEUS).is_file(),
    reason="Debian's prometheus is not installed (./scripts/setup installs it as root)")


class PromAPI:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, **params: Any) -> Any:
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def value(self, query: str) -> float | None:
        result = self.get("/api/v1/query", query=query)["result"]
        return float(result[0]["value"][1]) if result else None


@pytest.fixture(scope="module")
def served(slide_root: Path) -> Iterator[tuple[int, int]]:
    stats_port = free_port()
    proc, port = start_serve(slide_root, "--gateways", "2", "--workers", "2",
                             "--stats-port", str(stats_port))
    try:
        yield port, stats_port
    finally:
        stop_serve(proc)


@pytest.fixture(scope="module")
def prometheus(served: tuple[int, int], tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[PromAPI]:
    port, stats_port = served
    work = tmp_path_factory.mktemp("prometheus")
    shutil.copy(DEPLOY / "alerts.yml", work / "alerts.yml")
    # the shipped scrape config with this system's targets and a 1 s interval
    config = (DEPLOY / "prometheus.yml").read_text()
    config = config.replace("scrape_interval: 15s", "scrape_interval: 1s").replace(
        "evaluation_interval: 15s", "evaluation_interval: 1s").replace(
        '["gateway-1.example:8080", "gateway-2.example:8080"]', f'["127.0.0.1:{port}"]').replace(
        '["router.example:8089"]', f'["127.0.0.1:{stats_port}"]')
    assert f"127.0.0.1:{port}" in config and f"127.0.0.1:{stats_port}" in config
    (work / "prometheus.yml").write_text(config)
    web = free_port()
    log = open(work / "prometheus.log", "wb")  # noqa: SIM115 (kept for the process)
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={work / 'prometheus.yml'}",
         f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address=127.0.0.1:{web}",
         "--log.level=warn"], stdout=log, stderr=subprocess.STDOUT, cwd=work)
    api = PromAPI(web)
    try:
        def targets_up() -> bool:
            active = api.get("/api/v1/targets")["activeTargets"]
            return len(active) == 2 and all(t["health"] == "up" for t in active)
        wait_for(targets_up, 30, what="prometheus scraping both targets")
        yield api
    except Exception:
        print((work / "prometheus.log").read_text(errors="replace")[-3000:])
        raise
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _load(port: int, rounds: int) -> int:
    """Tiles over 3 websockets and plain HTTP GETs; returns how many came back OK."""
    got = [0]
    lock = threading.Lock()

    def viewer(index: int) -> None:
        ws = WSClient(f"ws://127.0.0.1:{port}/ws", f"http://127.0.0.1:{port}")
        try:
            for n in range(rounds):
                slide, level, col, row = LOAD_TILES[(n + index * 7) % len(LOAD_TILES)]
                ok = ws.tile(slide, level, col, row)[0]["ok"]
                with lock:
                    got[0] += ok
        finally:
            ws.close()

    threads = [threading.Thread(target=viewer, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for slide, level, col, row in LOAD_TILES:
        url = f"http://127.0.0.1:{port}/dz/{slide}_files/{level}/{col}_{row}.jpeg"
        with urllib.request.urlopen(url, timeout=15) as resp:
            got[0] += resp.status == 200
    for t in threads:
        t.join(60)
    return got[0]


def test_prometheus_counts_the_tiles_the_clients_got(served: tuple[int, int],
                                                     prometheus: PromAPI) -> None:
    port, _ = served
    # a flat counter before the load, seen by several scrapes
    wait_for(lambda: (prometheus.value(f"min(count_over_time({TILE_SERIES}[5s]))") or 0) >= 3
             and prometheus.value(f"sum(changes({TILE_SERIES}[3s]))") == 0, 30,
             what="a settled tile counter in prometheus")
    before = prometheus.value(TILES_OK)
    assert before is not None
    started = time.time()
    got = _load(port, rounds=200)
    assert got == 3 * 200 + len(LOAD_TILES)
    wait_for(lambda: prometheus.value(TILES_OK) == before + got, 20,
             what=f"prometheus to see all {got} tiles")
    window = int(time.time() - started) + 10
    increase = prometheus.value(f"sum(increase({TILE_SERIES}[{window}s]))")
    assert increase is not None
    # increase() extrapolates to the window's edges: the counter is flat there, so the
    # error is at most a scrape interval's worth on each side
    assert abs(increase - got) <= 0.15 * got, (increase, got)
    rate = prometheus.value(f"sum(rate({TILE_SERIES}[{window}s]))")
    assert rate is not None and abs(rate * window - got) <= 0.15 * got, (rate, window, got)

    for series in ('tilerouter_gateway_request_seconds_bucket{op="tile",le="0.01"}',
                   "tilerouter_gateway_processes", "tilerouter_router_queue_wait_seconds_count",
                   "tilerouter_worker_render_seconds_count", "tilerouter_worker_open_slides",
                   'tilerouter_router_affinity_total{result="hit"}',
                   "tilerouter_router_workers", "tilerouter_gateway_hot_hits_total"):
        assert prometheus.value(f"sum({series})") is not None, series
    assert prometheus.value("sum(tilerouter_gateway_processes)") == 2
    assert prometheus.value("sum(tilerouter_router_workers)") == 2
    worker_series = prometheus.get("/api/v1/series",
                                   **{"match[]": "tilerouter_worker_render_seconds_count"})
    assert len({s["worker"] for s in worker_series}) >= 2
    labels = prometheus.get("/api/v1/labels")
    assert not {"slide", "client", "address"} & set(labels)


def test_shipped_rules_and_dashboard_evaluate(served: tuple[int, int],
                                              prometheus: PromAPI) -> None:
    def evaluated() -> bool:
        groups = prometheus.get("/api/v1/rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return len(rules) == 7 and all(r.get("health") == "ok" for r in rules)
    wait_for(evaluated, 20, what="every alerting rule evaluated without error")
    firing = [a["labels"]["alertname"] for a in prometheus.get("/api/v1/alerts")["alerts"]]
    assert "TilerouterNoWorkers" not in firing and "TilerouterRouterDown" not in firing
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 16
    for expr in exprs:  # Grafana's $__rate_interval is a range Prometheus knows
        prometheus.get("/api/v1/query", query=expr.replace("$__rate_interval", "1m"))
    result = prometheus.value(exprs[0].replace("$__rate_interval", "1m"))
    assert result is not None  # tiles/s has data
