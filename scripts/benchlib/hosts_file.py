"""A hosts file of our own, seen as /etc/hosts by the processes we start (root only).

Each process runs in a private mount namespace (``unshare -m``, no propagation back)
where our file is bind-mounted over /etc/hosts and a one-line nsswitch.conf
(``hosts: files``) over /etc/nsswitch.conf, so names resolve from that file alone, with
no DNS server asked. The host's own files are never touched. Rewriting the file in place
(same inode) is what the processes see on their next getaddrinfo. This is how the tests
and ``bench_router_dns.py`` give routers a real DNS name with several addresses, as a
Kubernetes headless service does, on one machine."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .system import REPO, System

_MOUNT = ('mount --bind "$0" /etc/hosts && mount --bind "$1" /etc/nsswitch.conf '
          '&& shift && exec "$@"')


@functools.cache
def unavailable_reason() -> str | None:
    """Why a private /etc/hosts cannot be had here (None: it can): tried once for real,
    since root in a container may still be refused a mount namespace."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return "a private /etc/hosts needs root and unshare(1)"
    with tempfile.TemporaryDirectory(prefix="hosts-probe-") as tmp:
        probe = HostsFile(Path(tmp), "probe.invalid")
        done = subprocess.run(probe.wrap(["true"]), capture_output=True, text=True,
                              timeout=30, check=False)
    if done.returncode != 0:
        return f"no private mount namespace here: {done.stderr.strip()[:200]}"
    return None


class HostsFile:
    """``name`` resolving to the addresses given to ``set``, inside ``wrap``ped commands."""

    def __init__(self, directory: Path, name: str) -> None:
        self.name = name
        self.path = directory / "hosts"
        self.nsswitch = directory / "nsswitch.conf"
        self.nsswitch.write_text("hosts: files\n")
        self._base = "127.0.0.1 localhost\n::1 localhost ip6-localhost\n"
        self.set()

    def set(self, *addresses: str) -> None:
        """Rewrite in place (the bind mount follows the inode, not the path)."""
        with open(self.path, "w") as f:
            f.write(self._base + "".join(f"{a} {self.name}\n" for a in addresses))

    def wrap(self, argv: list[str]) -> list[str]:
        """``argv`` run where /etc/hosts is this file."""
        return ["unshare", "-m", "--propagation", "private", "sh", "-c", _MOUNT,
                str(self.path), str(self.nsswitch), *argv]

    def spawn(self, sysm: System, name: str, module: str) -> subprocess.Popen[bytes]:
        """``System.spawn`` of a component that resolves names from this file."""
        log = open(sysm.rundir / f"{name}.log", "ab")  # noqa: SIM115 (kept for the process)
        proc = subprocess.Popen(self.wrap([sys.executable, "-m", module]), env=sysm.env,
                                cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        sysm.procs[name] = proc
        return proc
