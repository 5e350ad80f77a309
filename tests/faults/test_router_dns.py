"""Routers named by DNS join and leave under websocket load, with no restart of the
gateway or the workers and no request lost.

The name is real: the gateway and the worker launcher run where /etc/hosts is the test's
own file (scripts/benchlib/hosts_file.py: a private mount namespace, root only), and
routers.test maps to 127.0.0.2 and/or 127.0.0.3, where the routers listen on the same
ports, as pods behind a Kubernetes headless service do. Every request gets exactly one
good reply."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.benchlib.hosts_file import HostsFile, unavailable_reason
from scripts.benchlib.procs import child_pids
from tests.faults.ws_load import Load
from tests.helpers import System, free_port, running, wait_for

NAME = "routers.test"
A, B = "127.0.0.2", "127.0.0.3"
COPIES = 16  # slide ids sharded over the routers: each router gets some (2**-15 it won't)


@pytest.fixture
def dns_system(slide_root: Path, tmp_path: Path) -> Iterator[tuple[System, HostsFile]]:
    if unavailable_reason():
        pytest.skip(unavailable_reason())
    hosts = HostsFile(tmp_path, NAME)
    slides = tmp_path / "slides"
    slides.mkdir()
    for i in range(COPIES):  # many slide ids, one small slide
        shutil.copy(slide_root / "c.tiff", slides / f"s{i:02d}.tiff")
    front, back = free_port(A), free_port(A)
    sysm = System(slides, workers=2, frontend=f"dns+tcp://{NAME}:{front}",
                  backend=f"dns+tcp://{NAME}:{back}", router_dns_interval=0.2,
                  heartbeat_interval=0.25, heartbeat_liveness=8, drain_timeout=2.0,
                  gateway_cache_bytes=0, prefetch=False, stats_port=0)
    with running(sysm, start=False):
        yield sysm, hosts


def _port(setting: str) -> str:
    return setting.rsplit(":", 1)[1]


def _front(sysm: System, address: str) -> str:
    return f"tcp://{address}:{_port(sysm.settings.frontend)}"


def _start_router(sysm: System, address: str) -> int:
    """A router on ``address`` at the ports the name's endpoints give; its stats port."""
    stats = free_port(address)
    sysm.spawn(f"router-{address}", "router.cli", TILEROUTER_FRONTEND=_front(sysm, address),
               TILEROUTER_BACKEND=f"tcp://{address}:{_port(sysm.settings.backend)}",
               TILEROUTER_STATS_HOST=address, TILEROUTER_STATS_PORT=str(stats))
    return stats


def _start_clients(sysm: System, hosts: HostsFile) -> None:
    """Worker launcher and gateway, resolving the name from the test's hosts file."""
    hosts.spawn(sysm, "workers", "workers.launcher")
    hosts.spawn(sysm, "gateway", "wsgateway.cli")


def _router_stats(address: str, port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{address}:{port}/stats", timeout=5) as resp:
        return json.loads(resp.read())


def _serving(address: str, port: int, workers: int = 2) -> bool:
    return len(_router_stats(address, port)["workers"]) == workers


def _gateway_routers(sysm: System) -> set[str]:
    return {r["endpoint"] for r in sysm.stats()["gateway"]["routers"]}


def _tiles() -> list[tuple[str, int, int, int]]:
    """Few tiles per slide: once rendered, the workers answer from their tile cache, so the
    load costs routing, not rendering (the tests running beside this one keep the CPU)."""
    return [(f"s{i:02d}.tiff", level, col, row) for i in range(COPIES)
            for level, col, row in ((11, 0, 0), (11, 1, 1), (10, 0, 0))]


def _pids(sysm: System) -> set[int]:
    """Gateway and worker processes (to show none was restarted)."""
    return {sysm.procs["gateway"].pid, *child_pids(sysm.procs["workers"].pid)}


@pytest.mark.timeout(90)
def test_a_router_joins_under_load(dns_system: tuple[System, HostsFile]) -> None:
    sysm, hosts = dns_system
    hosts.set(A)
    stats_a = _start_router(sysm, A)
    _start_clients(sysm, hosts)
    wait_for(lambda: _serving(A, stats_a), 30, 0.1, "workers on router A")
    wait_for(lambda: _gateway_routers(sysm) == {_front(sysm, A)}, 30, 0.1, "gateway up")
    pids = _pids(sysm)
    with Load([sysm.port], _tiles(), window=4) as load:
        wait_for(lambda: load.answered > 30 or load.failures, 30, 0.05, "load running")
        assert load.failures == []
        stats_b = _start_router(sysm, B)
        hosts.set(A, B)
        wait_for(lambda: _serving(B, stats_b), 20, 0.1, "the workers join router B")
        wait_for(lambda: _gateway_routers(sysm) == {_front(sysm, A), _front(sysm, B)}, 20, 0.1,
                 "the gateway lists both routers")
        wait_for(lambda: _router_stats(B, stats_b)["routing"]["requests"] > 20, 20, 0.1,
                 "router B takes its share of the slides")
        a_before = _router_stats(A, stats_a)["routing"]["requests"]
        wait_for(lambda: _router_stats(A, stats_a)["routing"]["requests"] > a_before + 20, 20,
                 0.1, "router A keeps its share")
    load.assert_exactly_one_good_reply_each()
    assert _pids(sysm) == pids, "no gateway or worker was restarted"


@pytest.mark.timeout(90)
def test_a_router_leaves_under_load(dns_system: tuple[System, HostsFile]) -> None:
    sysm, hosts = dns_system
    hosts.set(A, B)
    stats_a, stats_b = _start_router(sysm, A), _start_router(sysm, B)
    _start_clients(sysm, hosts)
    wait_for(lambda: _serving(A, stats_a) and _serving(B, stats_b), 30, 0.1,
             "workers on both routers")
    wait_for(lambda: _gateway_routers(sysm) == {_front(sysm, A), _front(sysm, B)}, 30, 0.1,
             "gateway up")
    pids = _pids(sysm)
    with Load([sysm.port], _tiles(), window=4) as load:
        wait_for(lambda: _router_stats(B, stats_b)["routing"]["requests"] > 20
                 or load.failures, 30, 0.05, "router B serving its share")
        assert load.failures == []
        hosts.set(A)  # the name drops B as its pod is told to stop, at the same moment
        leaving = sysm.procs[f"router-{B}"]
        leaving.send_signal(signal.SIGTERM)
        wait_for(lambda: _gateway_routers(sysm) == {_front(sysm, A)}, 20, 0.1,
                 "the gateway drops router B")
        assert leaving.wait(15) == 0
        served = load.answered
        wait_for(lambda: load.answered > served + 50, 20, 0.05, "service goes on on router A")
    load.assert_exactly_one_good_reply_each()
    assert _pids(sysm) == pids, "no gateway or worker was restarted"
    assert _serving(A, stats_a)
    logs = sysm.logs()
    assert f"router {_front(sysm, B)} left" in logs  # the gateway's
    assert f"router tcp://{B}:{_port(sysm.settings.backend)} left" in logs  # the workers'


def test_ipv6_router_addresses_in_brackets(slide_root: Path) -> None:
    """A name's AAAA address (here the literal ::1) is tcp://[::1]:PORT, IPv6 on the
    sockets of router, workers and gateway alike."""
    ports = []
    for _ in range(2):
        try:
            with socket.socket(socket.AF_INET6) as s:
                s.bind(("::1", 0))
                ports.append(s.getsockname()[1])
        except OSError as exc:
            pytest.skip(f"no IPv6 loopback here: {exc}")
    front, back = ports
    sysm = System(slide_root, workers=1, frontend=f"dns+tcp://[::1]:{front}",
                  backend=f"dns+tcp://[::1]:{back}", stats_port=0)
    with running(sysm, start=False):
        sysm.spawn("router", "router.cli", TILEROUTER_FRONTEND=f"tcp://[::1]:{front}",
                   TILEROUTER_BACKEND=f"tcp://[::1]:{back}")
        sysm.spawn("workers", "workers.launcher")
        sysm.spawn("gateway", "wsgateway.cli")
        sysm.wait_ready()
        ws = sysm.ws()
        try:
            assert ws.tile("a.tiff", 10, 0, 0)[0]["ok"] is True
        finally:
            ws.close()
        assert _gateway_routers(sysm) == {f"tcp://[::1]:{front}"}
