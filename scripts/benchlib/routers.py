"""The routers of a running system: their processes, and their counters asked directly.

A router's ``/stats`` port serves a snapshot refreshed once a heartbeat; ``mmi_stats``
asks the router itself on its frontend (the ``mmi.stats`` service, answered in its loop),
so a count is exact at the moment of asking: what a per-router share over a short window
needs. Used by bench_routers_scale.py and the router network-cut test.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import zmq

from router import protocol

from .procs import child_pids, cmdline, proc_info


@dataclass(frozen=True)
class RouterProc:
    pid: int
    frontend: str  # its TILEROUTER_FRONTEND
    stats_port: int  # its TILEROUTER_STATS_PORT (0 = off)

    def cpu_seconds(self) -> float:
        """utime + stime so far (from /proc/PID/stat); NaN once it is gone."""
        info = proc_info(self.pid)
        return info.cpu_s if info is not None else float("nan")


def _environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as fh:
        pairs = [entry.partition(b"=") for entry in fh.read().split(b"\0") if entry]
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, _, v in pairs}


def router_processes(serve_pid: int) -> list[RouterProc]:
    """The router children of a ``tilerouter serve`` process, in frontend order."""
    found = []
    for pid in child_pids(serve_pid):
        if "router.cli" not in cmdline(pid):
            continue
        with contextlib.suppress(OSError):  # gone meanwhile
            env = _environ(pid)
            found.append(RouterProc(pid, env.get("TILEROUTER_FRONTEND", ""),
                                    int(env.get("TILEROUTER_STATS_PORT") or 0)))
    return sorted(found, key=lambda r: r.frontend)


def mmi_stats(endpoint: str, timeout: float = 5.0,
              context: zmq.Context | None = None) -> dict[str, Any]:
    """The router's ``mmi.stats`` answer (workers, routing counters), asked on its
    frontend ``endpoint`` with a DEALER of our own."""
    sock = (context or zmq.Context.instance()).socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
        sock.send_multipart(protocol.encode(protocol.REQUEST, {
            "op": protocol.SERVICE_STATS, "rid": 1, "timeout": timeout}))
        for _ in range(1000):  # the router's heartbeats may come first
            if not sock.poll(int(timeout * 1000)):
                break
            msg = protocol.parse(sock.recv_multipart())
            if msg.command == protocol.REPLY and msg.header.get("rid") == 1:
                return dict(msg.header)
        raise TimeoutError(f"router {endpoint} did not answer mmi.stats in {timeout}s")
    finally:
        sock.close()
