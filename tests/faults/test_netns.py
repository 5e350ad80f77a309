"""A real network cut between hosts: workers in their own network namespace, joined to
the router's by a veth pair; the link goes down and comes back up.

Needs root and `ip netns` (skipped with the reason otherwise): the ``netns`` fixture
(tests/faults/conftest.py, tests/netns.py)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import REPO, System, free_port, wait_for
from tests.netns import NetNs


def test_link_down_and_up_between_router_and_worker_host(
        slide_root: Path, netns: NetNs) -> None:
    host_ip = netns.host_ip
    sysm = System(slide_root, workers=2, backend=f"tcp://{host_ip}:{free_port()}",
                  request_timeout=2.0, gateway_cache_bytes=0)
    try:
        sysm.spawn("router", "router.cli")
        sysm.spawn("gateway", "wsgateway.cli")
        # the worker host: the launcher runs inside the namespace
        log = open(sysm.rundir / "workers.log", "ab")  # noqa: SIM115
        sysm.procs["workers"] = subprocess.Popen(
            netns.argv(sys.executable, "-m", "workers.launcher"),
            env=sysm.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        sysm.wait_ready()
        ws = sysm.ws()
        try:
            assert ws.tile("a.tiff", 10, 0, 0)[0]["ok"] is True
            netns.link(up=False)
            cut = time.monotonic()
            wait_for(lambda: not sysm.stats()["workers"], 15, 0.1, "workers declared dead")
            detected = time.monotonic() - cut
            header, _ = ws.tile("a.tiff", 10, 1, 0)  # nobody to serve it: a clear error
            assert header["ok"] is False and header["error"]["code"] == "timeout", header
            netns.link(up=True)
            healed = time.monotonic()
            wait_for(lambda: len(sysm.stats()["workers"]) == 2, 60, 0.1, "workers back")
            wait_for(lambda: ws.tile("a.tiff", 10, 0, 1)[0]["ok"], 15, 0.1, "tiles again")
            recovered = time.monotonic() - healed
            print(f"netns cut: detected in {detected:.2f}s, recovered in {recovered:.2f}s")
        finally:
            ws.close()
    finally:
        sysm.stop()
