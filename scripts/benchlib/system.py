"""The whole system as separate real processes: router, worker launcher and gateway, each
``python -m <module>`` with its settings in ``TILEROUTER_*`` variables, talking over ipc
paths in a private directory, the gateway on a free port. Used by scripts/soak.py and by
the tests (tests/helpers.py), which kill and restart single components."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import websocket

from config.settings import Settings

from .procs import free_port

REPO = Path(__file__).resolve().parents[2]


def wait_for(predicate: Any, timeout: float = 20.0, interval: float = 0.05,
             what: str = "condition") -> Any:
    """Poll ``predicate`` until truthy (returned) or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the thing polled may not be up yet
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_exc})")



class System:
    """Router + launcher(workers) + gateway as separate real processes."""

    def __init__(self, slides: Path | str, workers: int = 2, **overrides: Any) -> None:
        self.rundir = Path(tempfile.mkdtemp(prefix="trt-", dir="/tmp"))
        defaults: dict[str, Any] = dict(
            slides=str(slides), workers=workers, port=free_port(), stats_port=free_port(),
            frontend=f"ipc://{self.rundir}/frontend.ipc",
            backend=f"ipc://{self.rundir}/backend.ipc",
            heartbeat_interval=0.2, heartbeat_liveness=5, request_timeout=10.0, gateways=1,
            log_level="INFO",
        )
        defaults.update(overrides)
        self.settings = Settings(**defaults)
        self.env = {**os.environ, **self.settings.to_env()}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.cwd = REPO  # components run from this tree (a benchmark may point at another)
        self.component_env: dict[str, dict[str, str]] = {}
        self.port = self.settings.port
        tls = bool(self.settings.tls_cert)
        self.base = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.ssl = ssl.create_default_context(cafile=self.settings.tls_cert) if tls else None
        self.token = self.settings.auth_token or None  # sent by get() and ws() by default

    # --- processes ------------------------------------------------------------------------

    def spawn(self, name: str, module: str, **env: str) -> subprocess.Popen[bytes]:
        """Start a component; ``env`` adds TILEROUTER_* overrides for this process only."""
        log = open(self.rundir / f"{name}.log", "ab")  # noqa: SIM115 (kept for the process)
        full_env = {**self.env, **self.component_env.get(name, {}), **env}
        proc = subprocess.Popen([sys.executable, "-m", module], env=full_env, cwd=self.cwd,
                                stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def start(self) -> System:
        self.spawn("router", "router.cli")
        self.spawn("workers", "workers.launcher")
        self.spawn("gateway", "wsgateway.cli")
        self.wait_ready()
        return self

    def wait_ready(self, workers: int | None = None) -> None:
        n = self.settings.worker_count if workers is None else workers
        wait_for(lambda: len(self.stats()["workers"]) == n, 30, what=f"{n} workers registered")

    def stop_process(self, name: str, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"{name} did not exit within {timeout}s of signal {sig}") from None

    def stop(self) -> None:
        errors = []
        for name in ["gateway", "workers", *[n for n in self.procs if n not in
                                             ("gateway", "workers", "router")], "router"]:
            if name in self.procs:
                try:
                    self.stop_process(name)
                except AssertionError as exc:
                    errors.append(str(exc))
        for proc in self.procs.values():
            proc.kill()
        shutil.rmtree(self.rundir, ignore_errors=True)
        assert not errors, errors

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.rundir.glob("*.log"))

    # --- clients --------------------------------------------------------------------------

    def get(self, path: str, timeout: float = 15, token: str | None = "default",
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        token = self.token if token == "default" else token
        req = urllib.request.Request(self.base + path, headers=dict(headers or {}))
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.ssl) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()

    def stats(self) -> dict[str, Any]:
        status, _, body = self.get("/stats", timeout=5)
        assert status == 200, body
        return json.loads(body)

    def ws(self, origin: str | None = None, token: str | None = "default",
           query: str = "", cookie: str | None = None, rcvbuf: int | None = None
           ) -> WSClient:
        token = self.token if token == "default" else token
        scheme = "wss" if self.ssl else "ws"
        headers = [f"Authorization: Bearer {token}"] if token else []
        return WSClient(f"{scheme}://127.0.0.1:{self.port}/ws{query}",
                        origin or self.base, headers=headers, cookie=cookie,
                        sslopt={"ca_certs": self.settings.tls_cert} if self.ssl else None,
                        rcvbuf=rcvbuf)



class WSClient:
    """Synchronous websocket client speaking the public protocol (README)."""

    def __init__(self, url: str, origin: str, timeout: float = 15,
                 headers: list[str] | None = None, cookie: str | None = None,
                 sslopt: dict[str, Any] | None = None, rcvbuf: int | None = None) -> None:
        sockopt = ((socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf),) if rcvbuf else ()
        self.sock = websocket.create_connection(url, timeout=timeout, origin=origin,
                                                header=headers or [], cookie=cookie,
                                                sslopt=sslopt, sockopt=sockopt)
        self._next = 0

    def close(self) -> None:
        self.sock.close()

    def send(self, obj: Any) -> None:
        self.sock.send(obj if isinstance(obj, str) else json.dumps(obj))

    def recv(self) -> tuple[dict[str, Any], bytes | None]:
        opcode, data = self.sock.recv_data()
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            raise websocket.WebSocketConnectionClosedException(f"closed by server: {data!r}")
        return self.parse(opcode, data)

    @staticmethod
    def parse(opcode: int, data: bytes) -> tuple[dict[str, Any], bytes | None]:
        """(header, image bytes or None) of one server message, binary or text."""
        if opcode == websocket.ABNF.OPCODE_BINARY:
            (n,) = struct.unpack(">I", data[:4])
            return json.loads(data[4:4 + n]), data[4 + n:]
        return json.loads(data), None

    def request(self, obj: dict[str, Any]) -> tuple[dict[str, Any], bytes | None]:
        self._next += 1
        obj = {"id": self._next, **obj}
        self.send(obj)
        header, payload = self.recv()
        assert header.get("id") == obj["id"], (header, obj)
        return header, payload

    def tile(self, slide: str, level: int, col: int, row: int, fmt: str = "jpeg"
             ) -> tuple[dict[str, Any], bytes | None]:
        return self.request({"op": "tile", "slide": slide, "level": level, "col": col,
                             "row": row, "format": fmt})
