"""A network namespace joined to the host by a veth pair, for real network cuts.

Needs root and `ip netns` (the tests using it skip with the reason otherwise); the fixture
``netns`` (tests/faults/conftest.py) gives one to a test. The
addresses are on the veth pair the fixture creates and deletes; nothing leaves the machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@dataclass(frozen=True)
class NetNs:
    """One namespace ``name``; ``host_if`` (host side, ``host_ip``) links it to the host,
    whose peer inside has ``ns_ip``."""

    name: str
    host_if: str
    host_ip: str
    ns_ip: str

    def argv(self, *argv: str) -> list[str]:
        """``argv`` run inside the namespace (``ip netns exec`` execs it: same pid)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def link(self, up: bool) -> None:
        """Cut (down) or restore (up) the link, from the host side."""
        ip("link", "set", self.host_if, "up" if up else "down")


def make_netns() -> Iterator[NetNs]:
    """The ``netns`` fixture's body (tests/faults/conftest.py): a fresh namespace and veth
    pair, both deleted afterwards."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    tag = uuid.uuid4().hex[:6]
    ns, host_if, ns_if = f"trw{tag}", f"trh{tag}", f"trn{tag}"
    subnet = 64 + int(tag[:2], 16) % 128
    host_ip, ns_ip = f"10.77.{subnet}.1", f"10.77.{subnet}.2"
    try:
        ip("netns", "add", ns)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot create a network namespace here: {exc.stderr.decode().strip()}")
    try:
        ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        ip("link", "set", ns_if, "netns", ns)
        ip("addr", "add", f"{host_ip}/24", "dev", host_if)
        ip("link", "set", host_if, "up")
        ip("netns", "exec", ns, "ip", "addr", "add", f"{ns_ip}/24", "dev", ns_if)
        ip("netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield NetNs(ns, host_if, host_ip, ns_ip)
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
