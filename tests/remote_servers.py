"""Pytest fixtures for the remote slide stores: a real S3 server (moto), real nginx, and
the latency/fault proxy in front of either.

The servers themselves live in ``scripts/benchlib`` (the benchmarks start the same ones,
and scripts never import tests); these fixtures only start them, stop them, and skip with
the reason when a server's package or binary is missing. A test module uses them with::

    from tests.remote_servers import nginx_factory, proxy_factory, s3_server  # noqa: F401
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from scripts.benchlib.remote_servers import NGINX, NginxServer, S3Server
from scripts.benchlib.tcpproxy import TcpProxy

__all__ = ["nginx_factory", "proxy_factory", "s3_server"]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One moto S3 server per test process; tests make buckets of their own names."""
    missing = [m for m in ("moto", "boto3", "flask", "werkzeug")
               if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"S3 server: {', '.join(missing)} not installed "
                    "(test extras: moto[server], boto3; .venv/bin/pip install -e '.[test]')")
    with S3Server() as server:
        yield server


@pytest.fixture
def nginx_factory() -> Iterator[Callable[..., NginxServer]]:
    """``start(root, **options)`` -> a running nginx serving ``root``; all stopped after
    the test."""
    if not os.access(NGINX, os.X_OK):
        pytest.skip(f"HTTP server: {NGINX} missing (./scripts/setup installs Debian's nginx "
                    "when root; else apt-get install nginx)")
    started: list[NginxServer] = []

    def start(root: str | os.PathLike[str], **options: object) -> NginxServer:
        server = NginxServer(Path(root), **options)  # type: ignore[arg-type]
        started.append(server)
        return server.start()

    yield start
    for server in reversed(started):
        server.stop()


@pytest.fixture
def proxy_factory() -> Iterator[Callable[..., TcpProxy]]:
    """``make(host, port, rtt=0.02, **options)`` -> a running ``TcpProxy`` to host:port;
    all stopped after the test."""
    started: list[TcpProxy] = []

    def make(host: str, port: int, rtt: float = 0.02, **options: object) -> TcpProxy:
        proxy = TcpProxy(host, port, rtt=rtt, **options)  # type: ignore[arg-type]
        started.append(proxy)
        return proxy.start()

    yield make
    for proxy in reversed(started):
        proxy.stop()
