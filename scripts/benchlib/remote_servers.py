"""Real remote slide stores on this machine: moto's S3 server and Debian's nginx.

The S3 and HTTP-range readers are tested and benchmarked against real servers speaking the
real protocols (signed S3 requests, ETags, ``Range``/206, keep-alive), not against mocks of
the client library, so that what passes here is what a bucket or a static file server
does. Both bind 127.0.0.1 only, on ports the kernel picks. Put ``tcpproxy.TcpProxy`` in
front of either for latency and faults.

Shared by the tests (fixtures in ``tests/remote_servers.py`` wrap these classes) and the
benchmarks, so it imports nothing from ``tests``. Importable as
``scripts.benchlib.remote_servers`` (pytest) and ``benchlib.remote_servers`` (scripts).
moto and boto3 are imported only when an S3 server starts, so nginx alone needs neither.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .procs import die_with_parent, free_port

NGINX = "/usr/sbin/nginx"
MANIFEST = "index.json"
S3_KEY = S3_SECRET = "testing"  # moto accepts any credentials; these never leave the host
S3_REGION = "us-east-1"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
BIND_ATTEMPTS = 5


def port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``pred`` every 20 ms until true; ``TimeoutError`` naming ``what`` after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def write_manifest(folder: str | os.PathLike[str], suffixes: tuple[str, ...] = ()) -> Path:
    """Write ``folder/index.json``: ``{"slides": [{"path": "a/b.svs", "size": N}, ...]}``,
    every regular file under ``folder`` (symlinks followed, hidden names and the manifest
    itself left out; only names ending in ``suffixes`` when given), paths relative and
    '/'-separated, sorted. An HTTP store has no listing (nginx runs with autoindex off),
    so this is how a reader learns what the server holds. Written whole then renamed."""
    root = Path(folder)
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            rel = (Path(dirpath) / name).relative_to(root).as_posix()
            if name.startswith(".") or rel == MANIFEST:
                continue
            if suffixes and not name.lower().endswith(tuple(s.lower() for s in suffixes)):
                continue
            path = Path(dirpath) / name
            if path.is_file():  # a dangling link or a socket is no slide
                entries.append({"path": rel, "size": path.stat().st_size})
    entries.sort(key=lambda e: e["path"])
    out = root / MANIFEST
    tmp = root / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps({"slides": entries}, indent=1) + "\n")
    os.replace(tmp, out)
    return out


class S3Server:
    """moto's standalone S3 server in a thread of this process.

    Port 0 is passed to moto and the bound port read back (``get_host_and_port``): a free
    port picked beforehand could be taken in between, and ``ThreadedMotoServer.start()``
    then waits forever for a server thread that died on the bind. moto keeps its state in
    module globals: two servers in one process share their buckets (``reset()`` empties)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self._server: Any = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> S3Server:
        from moto.server import ThreadedMotoServer

        werkzeug_log = logging.getLogger("werkzeug")
        if werkzeug_log.level == logging.NOTSET:  # a line per request on stderr, else
            werkzeug_log.setLevel(logging.WARNING)
        self._server = ThreadedMotoServer(ip_address=self.host, port=0, verbose=False)
        self._server.start()
        self.port = int(self._server.get_host_and_port()[1])
        wait_until(lambda: port_open(self.host, self.port), START_TIMEOUT, "moto's S3 port")
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop()  # werkzeug's shutdown: returns within its 0.5 s poll interval

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def client(self, endpoint_url: str | None = None, **config: Any) -> Any:
        """A boto3 S3 client on this server, or on ``endpoint_url`` (a proxy in front of
        it); ``config`` goes to ``botocore.config.Config`` (e.g. ``retries``)."""
        import boto3
        from botocore.config import Config

        cfg = Config(s3={"addressing_style": "path"}, **config)
        return boto3.client("s3", endpoint_url=endpoint_url or self.endpoint_url,
                            aws_access_key_id=S3_KEY, aws_secret_access_key=S3_SECRET,
                            region_name=S3_REGION, config=cfg)

    def storage_options(self, endpoint_url: str | None = None) -> dict[str, Any]:
        """What ``s3fs.S3FileSystem(**...)`` / fsspec's ``storage_options`` need to reach
        this server (or a proxy in front of it) with the dummy credentials."""
        return {"key": S3_KEY, "secret": S3_SECRET,
                "client_kwargs": {"endpoint_url": endpoint_url or self.endpoint_url,
                                  "region_name": S3_REGION},
                "config_kwargs": {"s3": {"addressing_style": "path"}}}

    def create_bucket(self, bucket: str) -> None:
        self.client().create_bucket(Bucket=bucket)

    def put_object(self, bucket: str, key: str, data: bytes) -> str:
        """Store ``data`` at ``key``; returns the new ETag (quotes included, as S3 sends)."""
        return str(self.client().put_object(Bucket=bucket, Key=key, Body=data)["ETag"])

    def replace_object(self, bucket: str, key: str, data: bytes) -> str:
        """Overwrite an existing object, as a slide re-scanned in place; its ETag changes
        (moto's ETag is the MD5 of the content, so ``data`` must differ from the old)."""
        c = self.client()
        old = c.head_object(Bucket=bucket, Key=key)["ETag"]
        new = self.put_object(bucket, key, data)
        if new == old:
            raise ValueError(f"s3://{bucket}/{key}: same content, same ETag {old}")
        return new

    def delete_object(self, bucket: str, key: str) -> None:
        self.client().delete_object(Bucket=bucket, Key=key)

    def upload_folder(self, bucket: str, folder: str | os.PathLike[str], prefix: str = "",
                      create: bool = True) -> dict[str, int]:
        """Upload every regular file under ``folder`` (symlinks followed, hidden names left
        out) to ``bucket`` as ``prefix + relative/path``; returns {key: size}."""
        if create:
            self.create_bucket(bucket)
        c = self.client()
        root = Path(folder)
        keys: dict[str, int] = {}
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                path = Path(dirpath) / name
                if name.startswith(".") or not path.is_file():
                    continue
                key = prefix + path.relative_to(root).as_posix()
                c.upload_file(str(path), bucket, key)
                keys[key] = path.stat().st_size
        return keys

    def reset(self) -> None:
        """Drop every bucket (moto's own reset endpoint)."""
        req = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(req, timeout=STOP_TIMEOUT):
            pass


_NGINX_CONF = """\
# generated by scripts/benchlib/remote_servers.py: everything lives in {tmp}
{user}daemon off;
master_process {master};
worker_processes {workers};
pid {tmp}/nginx.pid;
lock_file {tmp}/nginx.lock;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {access_log};
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    types {{ application/json json; }}
    default_type application/octet-stream;
    sendfile on;
    # no TCP_CORK: on loopback (64 KiB MTU) it held the tail of some responses for the
    # 40 ms delayed ACK (a 70 KB range took 43 ms instead of 0.2)
    tcp_nopush off;
    keepalive_requests 100000;
    server {{
        listen {host}:{port};
        root {root};
        autoindex off;
        location / {{ try_files $uri =404; }}
        # a server error on demand, for fault tests: anything under /broken/
        location /broken/ {{ return 503; }}
    }}
}}
"""


class NginxServer:
    """Debian's nginx serving ``root`` as static files over HTTP/1.1 on 127.0.0.1.

    Static files answer ``Range`` with 206 and carry ``ETag``/``Last-Modified`` out of the
    box; no open-file cache, so a file replaced on disk is served new at once. Config,
    pid, logs and temp dirs all sit in a private temp dir, nothing of the system's nginx
    is read or written. One process (``master_process off``) unless ``workers`` > 1; it
    then runs as the current user (``user root`` when root: the default ``nobody`` could
    not read test folders, which are 0700). Start it from the main thread or a thread
    that lives as long: it is told to die with the thread that started it."""

    def __init__(self, root: str | os.PathLike[str], *, host: str = "127.0.0.1",
                 workers: int = 1, access_log: bool = True, nginx: str = NGINX) -> None:
        self.root = Path(root).resolve()
        self.host = host
        self.port = 0
        self.workers = max(1, int(workers))
        self.access_log = access_log
        self.nginx = nginx
        self.tmp: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> NginxServer:
        if not os.access(self.nginx, os.X_OK):
            raise FileNotFoundError(f"{self.nginx} missing (apt-get install nginx)")
        if not self.root.is_dir():
            raise NotADirectoryError(self.root)
        self.tmp = Path(tempfile.mkdtemp(prefix="tilerouter-nginx-"))
        try:
            for _ in range(BIND_ATTEMPTS):  # a free port can be taken before nginx binds it
                if self._try_start(free_port(self.host)):
                    return self
            raise RuntimeError(f"nginx: no free port after {BIND_ATTEMPTS} attempts")
        except BaseException:
            self.stop()
            raise

    def _try_start(self, port: int) -> bool:
        assert self.tmp is not None
        conf = self.tmp / "nginx.conf"
        master = self.workers > 1
        conf.write_text(_NGINX_CONF.format(
            tmp=self.tmp, host=self.host, port=port, root=self.root, workers=self.workers,
            master="on" if master else "off",
            user="user root;\n" if master and os.geteuid() == 0 else "",
            access_log=f"{self.tmp}/access.log" if self.access_log else "off"))
        errors = self.tmp / "error.log"
        errors.write_bytes(b"")
        with open(self.tmp / "stderr.log", "ab") as out:
            self._proc = subprocess.Popen(
                [self.nginx, "-p", str(self.tmp), "-c", str(conf), "-e", str(errors)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=die_with_parent(signal.SIGTERM))
        proc = self._proc
        wait_until(lambda: proc.poll() is not None or port_open(self.host, port),
                   START_TIMEOUT, "nginx to listen")
        if proc.poll() is None:
            self.port = port
            return True
        self._proc = None
        if "Address already in use" in self.logs():
            return False
        raise RuntimeError(f"nginx exited with {proc.returncode}:\n{self.logs()}")

    def logs(self) -> str:
        """The error log and stderr, for a failure message."""
        if self.tmp is None:
            return ""
        parts = []
        for name in ("error.log", "stderr.log"):
            with contextlib.suppress(OSError):
                parts.append((self.tmp / name).read_text(errors="replace"))
        return "".join(parts)[-4000:]

    def stop(self) -> None:
        """SIGQUIT (graceful), then SIGTERM, then SIGKILL, each wait bounded; the temp dir
        goes too."""
        proc, self._proc = self._proc, None
        if proc is not None:
            for sig, wait in ((signal.SIGQUIT, STOP_TIMEOUT), (signal.SIGTERM, STOP_TIMEOUT),
                              (signal.SIGKILL, STOP_TIMEOUT)):
                if proc.poll() is not None:
                    break
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)  # workers too, when master_process is on
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(wait)
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

    def __enter__(self) -> NginxServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
