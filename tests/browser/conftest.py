"""Fixtures for the browser tests: demo slides, the real system, headless Chromium.

Everything here is self-contained (no shared harness): the tests start real
processes on free ports, wait for readiness by polling with deadlines, and stop
them with a signal (killing only on timeout).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


# --------------------------------------------------------------------------- helpers



def http_json(url: str, timeout: float = 3.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read().decode())


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT,
                 timeout: float = 15.0) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class Processes:
    """A set of named child processes whose output goes to log files."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TILEROUTER_")}
        env["PYTHONUNBUFFERED"] = "1"
        log = open(self.logdir / f"{name}.log", "ab")  # noqa: SIM115 (owned by the child)
        try:
            proc = subprocess.Popen([sys.executable, *argv], cwd=REPO, env=env,
                                    stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        self.procs[name] = proc
        return proc

    def stop(self, name: str, sig: int = signal.SIGINT, timeout: float = 15.0) -> None:
        proc = self.procs.pop(name, None)
        if proc is not None:
            stop_process(proc, sig, timeout)

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop(name)

    def logs(self, limit: int = 4000) -> str:
        out = []
        for f in sorted(self.logdir.glob("*.log")):
            out.append(f"----- {f.name}\n{f.read_text(errors='replace')[-limit:]}")
        return "\n".join(out)


class Server:
    """What a test needs to know about a running system."""

    def __init__(self, port: int, stats_port: int, procs: Processes,
                 flags: list[str] | None = None) -> None:
        self.port = port
        self.stats_port = stats_port
        self.base = f"http://127.0.0.1:{port}"
        self.procs = procs
        self.flags = flags or []  # component command-line flags (to restart one)
        # a gateway's: SO_REUSEPORT on, so a sibling can share the port (hand-off test)
        self.gateway_flags = [*self.flags, "--gateways", "2"]

    def stats(self) -> dict[str, Any]:
        return http_json(self.base + "/stats")

    def slides(self) -> dict[str, Any]:
        return http_json(self.base + "/slides")

    def wait_ready(self, n_slides: int | None = None, n_workers: int | None = None,
                   timeout: float = 60.0) -> None:
        def ready() -> bool:
            listed = self.slides()
            if n_slides is not None and len(listed.get("slides", [])) < n_slides:
                return False
            if n_workers is not None:
                return len(self.stats().get("workers", [])) >= n_workers
            return True

        try:
            wait_for(ready, timeout, what=f"{self.base}/slides to answer")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.procs.logs()}") from None


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def chromium_path() -> str:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"browser tests need the system Chromium at {CHROMIUM} (apt install chromium)")
    return CHROMIUM


@pytest.fixture(scope="session")
def browser(chromium_path: str) -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="browser tests need playwright (pip install playwright)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="session")
def slide_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two small demo slides, one of them in a sub-folder."""
    from readers.demo_slide import write_demo_slide

    root = tmp_path_factory.mktemp("browser-slides")
    (root / "cases").mkdir()
    write_demo_slide(root / "alpha.tiff", width=4000, height=3000, tile=256, seed=1)
    write_demo_slide(root / "cases" / "beta.tiff", width=4000, height=3000, tile=256, seed=2)
    return root


@pytest.fixture(scope="module")
def server(slide_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The whole system via ``python -m workers.serve serve`` on free ports."""
    logdir = tmp_path_factory.mktemp("serve-logs")
    procs = Processes(logdir)
    port, stats_port = free_port(), free_port()
    procs.spawn("serve", ["-m", "workers.serve", "serve", "--slides", str(slide_dir),
                          "--port", str(port), "--stats-port", str(stats_port),
                          "--workers", "2", "--no-browser"])
    srv = Server(port, stats_port, procs)
    try:
        srv.wait_ready(n_slides=2, n_workers=2)
        yield srv
    finally:
        procs.stop_all()


@pytest.fixture(scope="module")
def components(slide_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Router, worker launcher and gateway as separate processes (the gateway can be
    killed and restarted on the same port)."""
    logdir = tmp_path_factory.mktemp("component-logs")
    rundir = Path(tempfile.mkdtemp(prefix="trb-", dir="/tmp"))  # short ipc paths
    procs = Processes(logdir)
    port, stats_port = free_port(), free_port()
    flags = ["--slides", str(slide_dir), "--port", str(port), "--stats-port", str(stats_port),
             "--frontend", f"ipc://{rundir}/frontend.ipc",
             "--backend", f"ipc://{rundir}/backend.ipc", "--workers", "2"]
    srv = Server(port, stats_port, procs, flags)
    try:
        procs.spawn("router", ["-m", "router.cli", *flags])
        procs.spawn("workers", ["-m", "workers.launcher", *flags])
        procs.spawn("gateway", ["-m", "wsgateway.cli", *srv.gateway_flags])
        srv.wait_ready(n_slides=2, n_workers=2)
        yield srv
    finally:
        procs.stop_all()
        shutil.rmtree(rundir, ignore_errors=True)


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page; JavaScript exceptions on it fail the test."""
    context = browser.new_context(viewport={"width": 1400, "height": 860})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.set_default_timeout(20_000)
    try:
        yield pg
        assert not errors, f"JavaScript errors on the page: {errors}"
    finally:
        context.close()
