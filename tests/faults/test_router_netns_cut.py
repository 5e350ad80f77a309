"""A router on its own host, cut off by a real network cut and joined again.

Three routers with slides sharded over them; router 2 runs in a network namespace linked
to the host by a veth pair (its frontend and backend on the namespace's address); two
gateways and the workers run on the host. Under websocket load through both gateways
the link goes down: the requests of router 2's shard fail over to the
others (none is lost, none answered twice, none an error) and router 2 takes no share;
then the link comes back and router 2's shard returns to it (its share of requests, asked
of each router on its frontend, rises from 0 to about what it was before).

Needs root and `ip netns` (skipped with the reason otherwise): the ``netns`` fixture.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from readers.demo_slide import write_demo_slide
from scripts.benchlib.routers import mmi_stats
from tests.faults.ws_load import Load
from tests.helpers import REPO, System, free_port, running, wait_for
from tests.netns import NetNs

SLIDES = [f"s{i:02d}.tiff" for i in range(48)]  # every router owns some (~1/3 each)
TILES = [(s, level, col, row) for s in SLIDES for level in (10, 11)
         for col in range(2) for row in range(2)]
CLIENTS, WINDOW = 4, 6
WINDOW_REPLIES = 300  # replies per measured phase


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def _slides(root: Path) -> Path:
    """48 slide ids, hard links to one small slide (the sharding is by id)."""
    root.mkdir()
    first = Path(write_demo_slide(root / SLIDES[0], 1200, 900, seed=3))
    for name in SLIDES[1:]:
        os.link(first, root / name)
    return root


class Routers:
    """The three routers' addresses: 0 and 1 on the host, 2 in the namespace."""

    def __init__(self, ns_ip: str) -> None:
        hosts = ["127.0.0.1", "127.0.0.1", ns_ip]
        self.fronts = [f"tcp://{h}:{free_port()}" for h in hosts]
        self.backs = [f"tcp://{h}:{free_port()}" for h in hosts]

    def env(self, sysm: System, i: int) -> dict[str, str]:
        return sysm.settings.replace(frontend=self.fronts[i], backend=self.backs[i],
                                     stats_port=0).to_env()

    def stats(self, i: int) -> dict[str, Any]:
        """Router i's counters, asked on its frontend: exact at the moment of asking (its
        /stats port serves a snapshot up to one heartbeat old)."""
        return mmi_stats(self.fronts[i])

    def requests(self, indexes: range | list[int] = range(3)) -> list[int]:
        """Client requests each router has received."""
        return [self.stats(i)["routing"]["requests"] for i in indexes]

    def workers(self, i: int) -> int:
        return len(self.stats(i)["workers"])


def _link_state(port: int, endpoint: str) -> tuple[bool, bool]:
    """(available, has_workers) of one router as the gateway on ``port`` sees it."""
    links = _get(f"http://127.0.0.1:{port}/stats")["gateway"]["routers"]
    link = next(ln for ln in links if ln["endpoint"] == endpoint)
    return link["available"], link["has_workers"]


def _window(load: Load, routers: Routers, indexes: range | list[int],
            replies: int = WINDOW_REPLIES) -> tuple[list[int], int]:
    """Each router's requests, and the client replies, over the next ``replies``."""
    before, answered = routers.requests(indexes), load.answered
    wait_for(lambda: load.answered >= answered + replies, 30, what="replies flowing")
    after, replies = routers.requests(indexes), load.answered - answered
    return [a - b for a, b in zip(after, before, strict=True)], replies


@pytest.mark.timeout(120)
def test_router_cut_off_by_the_network_fails_over_and_takes_its_shard_back(
        tmp_path: Path, netns: NetNs) -> None:
    routers = Routers(netns.ns_ip)
    sysm = System(_slides(tmp_path / "slides"), workers=2, frontend=",".join(routers.fronts),
                  backend=",".join(routers.backs), gateway_cache_bytes=0, prefetch=False,
                  heartbeat_interval=0.2, heartbeat_liveness=5, request_timeout=10.0)
    second_port = free_port()
    with running(sysm, start=False):
        for i in (0, 1):
            sysm.spawn(f"router-{i}", "router.cli", **routers.env(sysm, i))
        log = open(sysm.rundir / "router-2.log", "ab")  # noqa: SIM115 (kept for the process)
        sysm.procs["router-2"] = subprocess.Popen(
            netns.argv(sys.executable, "-m", "router.cli"),
            env={**sysm.env, **routers.env(sysm, 2)}, cwd=REPO, stdout=log,
            stderr=subprocess.STDOUT)
        sysm.spawn("workers", "workers.launcher")
        sysm.spawn("gateway", "wsgateway.cli")
        sysm.spawn("gateway-1", "wsgateway.cli", TILEROUTER_PORT=str(second_port))
        ports = [sysm.port, second_port]
        wait_for(lambda: all(routers.workers(i) == 2 for i in range(3)), 30,
                 what="both workers registered with all three routers")
        wait_for(lambda: all(_link_state(p, f) == (True, True) for p in ports
                             for f in routers.fronts), 30, what="gateways see every router")
        # each worker's series are exported by one router only (its first, router 0)
        primaries = [(i, w["pid"]) for i in range(3) for w in routers.stats(i)["workers"]
                     if w["primary"]]
        assert sorted(i for i, _ in primaries) == [0, 0], primaries

        with Load(ports, TILES, clients=CLIENTS, window=WINDOW) as load:
            wait_for(lambda: load.answered > 100, 30, what="load running")
            steady, _ = _window(load, routers, range(3))
            share_before = steady[2] / sum(steady)
            assert share_before > 0.05, steady  # router 2 owns part of the slides

            netns.link(up=False)
            wait_for(lambda: all(not _link_state(p, routers.fronts[2])[0] for p in ports),
                     20, what="both gateways see router 2 gone")
            host, replies = _window(load, routers, [0, 1], 2 * WINDOW_REPLIES)
            # every reply of the window came through routers 0 and 1: router 2 took no share
            # (a request counts at its router before its reply, hence the in-flight slack)
            assert sum(host) >= replies - CLIENTS * WINDOW, (host, replies)

            netns.link(up=True)
            wait_for(lambda: routers.workers(2) == 2, 30, what="workers back at router 2")
            wait_for(lambda: all(_link_state(p, routers.fronts[2]) == (True, True)
                                 for p in ports), 30, what="gateways see router 2 back")
            healed, _ = _window(load, routers, range(3))
            share_after = healed[2] / sum(healed)
            assert share_after >= share_before / 2, (steady, healed)
        print(f"router 2 share: before {share_before:.2f}, cut 0, after {share_after:.2f}")
        load.assert_exactly_one_good_reply_each()
        assert load.answered >= 4 * WINDOW_REPLIES
