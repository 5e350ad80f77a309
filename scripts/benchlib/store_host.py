"""Child processes holding the remote benchmark's stores and latency proxies.

moto's S3 server and ``TcpProxy`` are Python threads; in the benchmark's own process they
would share one GIL with the load generator (and each other), and moto holds it for
milliseconds per request, so every proxied byte would wait on unrelated work. Each runs
in a child process of its own instead:

  python -m benchlib.store_host s3 FOLDER BUCKET PREFIX   moto with FOLDER uploaded
  python -m benchlib.store_host proxies HOST:PORT RTT_MS...  one TcpProxy per RTT

A child prints one JSON line once it is ready ({"port": N} or {"ports": {rtt: N}}), then
answers ``stats`` / ``reset`` lines on stdin (proxies: connections and bytes per RTT) and
stops everything when stdin closes, on SIGTERM, or when the benchmark dies (parent-death
signal). ``Child`` is the parent's handle on one.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from typing import Any, NoReturn

from .procs import die_with_parent, stop_group

SCRIPTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
READY_TIMEOUT = 300.0  # an upload of the whole slide set into moto comes first
REPLY_TIMEOUT = 10.0


class ChildError(RuntimeError):
    """A store child did not come up or stopped answering (its log is named)."""


class Child:
    """One ``store_host`` child: started in its own session, stopped with its group."""

    def __init__(self, args: list[str], log_path: str) -> None:
        self.log_path = log_path
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            filter(None, [SCRIPTS, os.environ.get("PYTHONPATH", "")]))}
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "benchlib.store_host", *args], env=env,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                start_new_session=True, preexec_fn=die_with_parent(signal.SIGTERM))
        try:
            self.ready: dict[str, Any] = self._reply(READY_TIMEOUT)
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _reply(self, timeout: float) -> dict[str, Any]:
        """The child's next JSON line, waited for at most ``timeout`` s."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise ChildError(f"store child {self.proc.args[3:5]} gave no answer "
                                 f"(exit {self.proc.poll()}; log {self.log_path})")
            readable, _, _ = select.select([self.proc.stdout], [], [], min(left, 1.0))
            if readable:
                line = self.proc.stdout.readline()
                if line:
                    return dict(json.loads(line))

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(command.encode() + b"\n")
            self.proc.stdin.flush()
        except OSError as exc:
            raise ChildError(f"store child gone ({exc}; log {self.log_path})") from None
        return self._reply(REPLY_TIMEOUT)

    def stop(self) -> None:
        """Close its stdin (it stops its servers and exits), then SIGTERM, then kill."""
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        stop_group(self.proc, signal.SIGTERM, 10.0, "store child")
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# --- the child side ------------------------------------------------------------------------


def _say(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _on_term(signum: int, _frame: object) -> NoReturn:
    raise SystemExit(128 + signum)


def _serve_s3(folder: str, bucket: str, prefix: str) -> None:
    from .remote_servers import S3Server

    server = S3Server().start()
    try:
        keys = server.upload_folder(bucket, folder, prefix)
        _say({"port": server.port, "objects": len(keys), "bytes": sum(keys.values())})
        for _ in sys.stdin:  # until the parent closes stdin
            _say({})
    finally:
        server.stop()


def _serve_proxies(target: str, rtts_ms: list[float]) -> None:
    from .tcpproxy import TcpProxy

    host, _, port = target.rpartition(":")
    proxies: dict[str, TcpProxy] = {}
    try:
        for rtt in rtts_ms:
            proxies[f"{rtt:g}"] = TcpProxy(host, int(port), rtt=rtt / 1000.0,
                                           handshake=True).start()
        _say({"ports": {k: p.port for k, p in proxies.items()}})
        for line in sys.stdin:  # until the parent closes stdin
            if line.strip() == "reset":
                for p in proxies.values():
                    p.reset_stats()
            _say({k: asdict(p.stats()) for k, p in proxies.items()})
    finally:
        for p in proxies.values():
            with contextlib.suppress(RuntimeError):
                p.stop()


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us; a Ctrl-C is its
    mode, *rest = argv
    if mode == "s3":
        _serve_s3(*rest)
    elif mode == "proxies":
        _serve_proxies(rest[0], [float(x) for x in rest[1:]])
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
