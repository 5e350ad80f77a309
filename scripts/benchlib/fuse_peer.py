"""bench_remote.py's peer: OpenSlide's DeepZoom server reading the same bucket through a
FUSE mount (Debian's s3fs-fuse) behind the same latency proxy.

That is how a server that only reads local files is usually put in front of a bucket.
Before anything is measured the script checks that FUSE can work here (/dev/fuse, the
s3fs and fusermount programs, then a real mount that must list the slides); when it
cannot, the peer is skipped and the reason printed. s3fs runs in the foreground as a
child in its own session with its defaults (no disk cache), one mount per RTT so no
cache carries over; the DeepZoom server (openslide-python's deepzoom_multiserver.py,
unmodified, as bench_peers.py runs it) serves the mount.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from .load import Budget, HttpViewer, LoadPlan, LoadResult, run_lane
from .procs import spawn, stop_group
from .remote_servers import S3_KEY, S3_SECRET
from .trace import TileRequest

MOUNT_TIMEOUT = 30.0
UNMOUNT_TIMEOUT = 10.0


def ensure_s3fs() -> str | None:
    """None when s3fs is there (installed from Debian when missing and we are root), else
    why not."""
    if shutil.which("s3fs"):
        return None
    if os.geteuid() != 0:
        return "s3fs (Debian package s3fs) is not installed and we are not root"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "s3fs"]
    for attempt in range(2):  # a stale package list: update once, then try again
        if subprocess.run(cmd, env=env, capture_output=True, check=False,
                          timeout=600).returncode == 0 and shutil.which("s3fs"):
            return None
        if attempt == 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True,
                           check=False, timeout=600)
    return "apt-get install s3fs failed"


def fuse_unavailable() -> str | None:
    """Why FUSE mounts cannot work here (None: the device and tools are there; the real
    test is the mount itself)."""
    try:
        mode = os.stat("/dev/fuse").st_mode
    except OSError as exc:
        return f"/dev/fuse: {exc.strerror}"
    if not stat.S_ISCHR(mode):
        return "/dev/fuse is not a character device"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "/dev/fuse is not readable and writable for this user"
    missing = ensure_s3fs()
    if missing:
        return missing
    if not (shutil.which("fusermount") or shutil.which("fusermount3")):
        return "no fusermount program (Debian package fuse3)"
    return None


class S3fsMount:
    """``bucket/prefix`` mounted read-only at a temporary directory by s3fs (``with``)."""

    def __init__(self, bucket: str, prefix: str, endpoint_url: str, log_path: str) -> None:
        self.source = f"{bucket}:/{prefix.strip('/')}"
        self.endpoint_url = endpoint_url
        self.log_path = log_path
        self.tmp = tempfile.mkdtemp(prefix="tilerouter-s3fs-")
        self.path = os.path.join(self.tmp, "mnt")
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> S3fsMount:
        os.mkdir(self.path)
        passwd = os.path.join(self.tmp, "passwd")
        fd = os.open(passwd, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{S3_KEY}:{S3_SECRET}\n")
        argv = ["s3fs", self.source, self.path, "-f", "-o", "ro", "-o",
                f"url={self.endpoint_url}", "-o", "use_path_request_style", "-o",
                f"passwd_file={passwd}", "-o", "dbglevel=warn"]
        self.proc = spawn(argv, self.log_path, parent_death_signal=signal.SIGTERM)
        try:
            self._wait_mounted()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _wait_mounted(self) -> None:
        deadline = time.monotonic() + MOUNT_TIMEOUT
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"s3fs exited with {self.proc.returncode}: "
                                   f"{self._log_tail()}")
            if os.path.ismount(self.path):
                with contextlib.suppress(OSError):
                    if os.listdir(self.path):
                        return
            time.sleep(0.1)
        raise RuntimeError(f"s3fs mount not listable after {MOUNT_TIMEOUT:g} s: "
                           f"{self._log_tail()}")

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError), open(self.log_path, errors="replace") as fh:
            return " ".join(fh.read()[-600:].split()) or "(no output)"
        return "(no log)"

    def __exit__(self, *exc: Any) -> None:
        if os.path.ismount(self.path):
            umount = shutil.which("fusermount") or shutil.which("fusermount3") or "umount"
            for flags in (["-u"], ["-uz"]):
                with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                    if subprocess.run([umount, *flags, self.path], capture_output=True,
                                      timeout=UNMOUNT_TIMEOUT, check=False).returncode == 0:
                        break
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_group(proc, signal.SIGTERM, UNMOUNT_TIMEOUT, "s3fs")
        if not os.path.ismount(self.path):
            shutil.rmtree(self.tmp, ignore_errors=True)


# --- the viewer trace against a server with its own URL scheme ------------------------------


async def run_path_load(port: int, traces: Sequence[Any], plan: LoadPlan,
                        path: Callable[[TileRequest], str]) -> LoadResult:
    """load.run_load over HTTP with ``path`` for the URLs."""
    result = LoadResult()
    budget = Budget(plan, len(traces))
    started = time.perf_counter()

    async def viewer(v: int, trace: Any) -> None:
        client = HttpViewer(f"http://127.0.0.1:{port}", plan.inflight, path)
        try:
            await asyncio.gather(*(run_lane(client, lane, v, trace, budget, plan, result)
                                   for lane in range(plan.inflight)))
        finally:
            await client.close()

    try:
        await asyncio.gather(*(viewer(v, t) for v, t in enumerate(traces)))
    except asyncio.CancelledError:
        budget.stop()
        raise
    result.elapsed = time.perf_counter() - started
    return result
