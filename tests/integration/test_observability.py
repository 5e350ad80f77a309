"""/metrics, /readyz on real processes: two gateways sharing a port, a router, workers."""

from __future__ import annotations

import json
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import System, running, wait_for

TILES = [(10, c, r) for c in range(3) for r in range(2)] + [(11, 0, 0), (11, 1, 0)]


def scrape(url: str) -> tuple[str, dict[str, list[tuple[dict[str, str], float]]]]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    series: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            series.setdefault(s.name, []).append((s.labels, s.value))
    return text, series


def total(series: dict, name: str, **labels: str) -> float:
    return sum(v for lab, v in series.get(name, ())
               if all(lab.get(k) == want for k, want in labels.items()))


@pytest.fixture(scope="module")
def two_gateways(slide_root: Path) -> Iterator[System]:
    sysm = System(slide_root, workers=2, gateways=2)
    metrics_dir = sysm.rundir / "metrics"
    metrics_dir.mkdir()
    sysm.env["TILEROUTER_METRICS_DIR"] = str(metrics_dir)
    with running(sysm, start=False):
        sysm.spawn("router", "router.cli")
        sysm.spawn("workers", "workers.launcher")
        sysm.spawn("gateway", "wsgateway.cli")
        sysm.spawn("gateway-1", "wsgateway.cli")
        sysm.wait_ready()
        wait_for(lambda: len(list(metrics_dir.glob("gateway-*.json"))) == 2, 30,
                 what="both gateways flushed metrics")
        yield sysm


def test_metrics_count_what_the_clients_got(two_gateways: System) -> None:
    sysm = two_gateways
    base_text, base = scrape(sysm.base + "/metrics")
    got_ok = 0
    for level, col, row in TILES * 3:  # a new connection each: both processes get some
        status, _, _ = sysm.get(f"/dz/a.tiff_files/{level}/{col}_{row}.jpeg")
        got_ok += status == 200
    ws = sysm.ws()
    try:
        for level, col, row in TILES:
            got_ok += bool(ws.tile("sub/b.tiff", level, col, row)[0]["ok"])
        assert ws.tile("nope.tiff", 10, 0, 0)[0]["error"]["code"] == "not_found"
        ws.send("{not json")
        assert ws.recv()[0]["error"]["code"] == "bad_request"
    finally:
        ws.close()
    assert got_ok == len(TILES) * 4

    def counted() -> bool:
        _, now = scrape(sysm.base + "/metrics")
        ok = (total(now, "tilerouter_gateway_requests_total", op="tile", outcome="ok")
              - total(base, "tilerouter_gateway_requests_total", op="tile", outcome="ok"))
        return ok == got_ok
    wait_for(counted, 10, what="gateway metrics to count every tile")
    text, now = scrape(sysm.base + "/metrics")
    assert total(now, "tilerouter_gateway_processes") == 2
    assert total(now, "tilerouter_gateway_requests_total", op="tile", format="jpeg",
                 outcome="not_found") >= 1
    assert total(now, "tilerouter_gateway_rejected_total", code="bad_request") >= 1
    assert total(now, "tilerouter_gateway_request_seconds_count", op="tile") >= got_ok
    assert total(now, "tilerouter_gateway_router_up") == 2
    assert total(now, "tilerouter_gateway_hot_hits_total") > 0  # repeats never left it
    assert "a.tiff" not in text and "sub/b.tiff" not in text  # no slide id as a label

    stats_url = f"http://127.0.0.1:{sysm.settings.stats_port}/metrics"

    def workers_reported() -> bool:
        _, r = scrape(stats_url)
        rendered = total(r, "tilerouter_worker_render_seconds_count")
        return total(r, "tilerouter_router_workers") == 2 and rendered >= total(
            r, "tilerouter_router_replies_total") > 0
    wait_for(workers_reported, 10, what="router metrics with the workers' reports")
    rtext, r = scrape(stats_url)
    assert total(r, "tilerouter_router_queue_wait_seconds_count") >= total(
        r, "tilerouter_router_replies_total")
    assert total(r, "tilerouter_router_affinity_total", policy="cache-aware") > 0
    assert total(r, "tilerouter_worker_open_slides") >= 2
    assert total(r, "tilerouter_worker_cache_bytes", cache="tile") > 0
    assert len({lab["worker"] for lab, _ in r["tilerouter_worker_served_total"]}) == 2
    assert "a.tiff" not in rtext
    shard = sysm.stats()["shard"]  # the slides the gateways sent this router
    assert {"a.tiff", "sub/b.tiff", "nope.tiff"} <= {slide for slide, _ in shard["top"]}
    assert shard["requests"] >= len(TILES) * 2 and shard["slides"] >= 3


def test_metrics_survive_a_gateway_restart(two_gateways: System) -> None:
    """Counters of a gateway that exited stay in the totals; its gauges leave."""
    sysm = two_gateways
    for level, col, row in TILES:
        assert sysm.get(f"/dz/c.tiff_files/{level}/{col}_{row}.jpeg")[0] == 200
    _, before = scrape(sysm.base + "/metrics")
    sysm.stop_process("gateway-1", signal.SIGTERM)
    wait_for(lambda: total(scrape(sysm.base + "/metrics")[1],
                           "tilerouter_gateway_processes") == 1, 10, what="one gateway")
    _, after = scrape(sysm.base + "/metrics")
    name = "tilerouter_gateway_requests_total"
    assert total(after, name, outcome="ok") >= total(before, name, outcome="ok")
    sysm.spawn("gateway-1", "wsgateway.cli")


def test_readyz_needs_a_router_and_a_worker(fresh_system: System) -> None:
    sysm = fresh_system
    status, _, body = sysm.get("/readyz", token=None)
    assert status == 200 and json.loads(body) == {"ready": True, "workers": 2}
    sysm.stop_process("workers")
    wait_for(lambda: sysm.get("/readyz")[0] == 503, 10, what="not ready without workers")
    assert json.loads(sysm.get("/readyz")[2]) == {"ready": False, "workers": 0}
    assert sysm.get("/healthz")[0] == 200  # alive all the same
    sysm.stop_process("router")

    def router_gone() -> bool:
        status, _, body = sysm.get("/readyz")
        return status == 503 and json.loads(body).get("error", {}).get("code") == "unavailable"
    wait_for(router_gone, 15, what="not ready without a router")
    assert sysm.get("/healthz")[0] == 200
