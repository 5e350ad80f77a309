"""A hosts file of the test's own, seen as /etc/hosts by the processes it starts.

Each process runs in a private mount namespace (``unshare -m``, no propagation back)
where the test's file is bind-mounted over /etc/hosts and a one-line nsswitch.conf
(``hosts: files``) over /etc/nsswitch.conf, so names resolve from that file alone, with
no DNS server asked. The host's own files are never touched. Rewriting the file in place
(same inode) is what the processes see on their next getaddrinfo. Needs root."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

_MOUNT = ('mount --bind "$0" /etc/hosts && mount --bind "$1" /etc/nsswitch.conf '
          '&& shift && exec "$@"')


class HostsFile:
    """``name`` resolving to the addresses given to ``set``, inside ``wrap``ped commands."""

    def __init__(self, directory: Path, name: str) -> None:
        if os.geteuid() != 0 or shutil.which("unshare") is None:
            pytest.skip("a private /etc/hosts needs root and unshare(1)")
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
