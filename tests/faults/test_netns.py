"""A real network cut between hosts: workers in their own network namespace, joined to
the router's by a veth pair; the link goes down and comes back up.

Needs root and `ip netns` (skipped with the reason otherwise). Addresses are on the
veth pair this test creates and deletes; nothing leaves the machine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import REPO, System, free_port, wait_for


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def worker_netns() -> Iterator[tuple[str, str, str]]:
    """(namespace, host-side veth, address of the host side) with a link to the host."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    tag = uuid.uuid4().hex[:6]
    ns, host_if, ns_if = f"trw{tag}", f"trh{tag}", f"trn{tag}"
    subnet = 64 + int(tag[:2], 16) % 128
    host_ip, ns_ip = f"10.77.{subnet}.1", f"10.77.{subnet}.2"
    try:
        _ip("netns", "add", ns)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot create a network namespace here: {exc.stderr.decode().strip()}")
    try:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _ip("link", "set", ns_if, "netns", ns)
        _ip("addr", "add", f"{host_ip}/24", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("netns", "exec", ns, "ip", "addr", "add", f"{ns_ip}/24", "dev", ns_if)
        _ip("netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        _ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield ns, host_if, host_ip
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_link_down_and_up_between_router_and_worker_host(
        slide_root: Path, worker_netns: tuple[str, str, str]) -> None:
    ns, host_if, host_ip = worker_netns
    sysm = System(slide_root, workers=2, backend=f"tcp://{host_ip}:{free_port()}",
                  request_timeout=2.0, gateway_cache_bytes=0)
    try:
        sysm.spawn("router", "router.cli")
        sysm.spawn("gateway", "wsgateway.cli")
        # the worker host: the launcher runs inside the namespace
        log = open(sysm.rundir / "workers.log", "ab")  # noqa: SIM115
        sysm.procs["workers"] = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "workers.launcher"],
            env=sysm.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        sysm.wait_ready()
        ws = sysm.ws()
        try:
            assert ws.tile("a.tiff", 10, 0, 0)[0]["ok"] is True
            _ip("link", "set", host_if, "down")
            cut = time.monotonic()
            wait_for(lambda: not sysm.stats()["workers"], 15, 0.1, "workers declared dead")
            detected = time.monotonic() - cut
            header, _ = ws.tile("a.tiff", 10, 1, 0)  # nobody to serve it: a clear error
            assert header["ok"] is False and header["error"]["code"] == "timeout", header
            _ip("link", "set", host_if, "up")
            healed = time.monotonic()
            wait_for(lambda: len(sysm.stats()["workers"]) == 2, 60, 0.1, "workers back")
            wait_for(lambda: ws.tile("a.tiff", 10, 0, 1)[0]["ok"], 15, 0.1, "tiles again")
            recovered = time.monotonic() - healed
            print(f"netns cut: detected in {detected:.2f}s, recovered in {recovered:.2f}s")
        finally:
            ws.close()
    finally:
        sysm.stop()
