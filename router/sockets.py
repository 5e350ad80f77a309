"""The broker's two ROUTER sockets: options, CurveZMQ, and binding (ipc:// too)."""

from __future__ import annotations

import os

import zmq

from config.endpoints import DNS_SCHEME, wants_ipv6
from config.errors import ConfigError
from config.lists import endpoint_list
from config.settings import Settings
from router.curve import secure_server


def router_socket(context: zmq.Context, settings: Settings) -> zmq.Socket:
    """A ROUTER that fails loudly on unknown peers (ROUTER_MANDATORY), lets a reconnecting
    peer take its identity over, and queues deep."""
    sock = context.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    # a peer that reconnects under its identity (a worker after a silent spell) takes it
    # over at once: else its replies would come from a fresh random identity and be lost
    sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.setsockopt(zmq.RCVHWM, 100_000)
    secure_server(sock, settings)
    return sock


def bind_endpoint(sock: zmq.Socket, endpoint: str) -> str:
    """Bind, creating the directory of an ipc:// path; return the bound endpoint. A router
    binds one endpoint each side: a list (for gateways and workers) is a ConfigError."""
    if len(endpoint_list(endpoint)) != 1:
        raise ConfigError(f"a router binds one endpoint, not {endpoint!r}")
    if endpoint.startswith(DNS_SCHEME):
        raise ConfigError(f"a router binds tcp://ADDRESS:PORT, not {endpoint!r} (dns+tcp:// "
                          "names the routers for gateways and workers)")
    if wants_ipv6(endpoint):
        sock.setsockopt(zmq.IPV6, 1)
    if endpoint.startswith("ipc://"):
        os.makedirs(os.path.dirname(endpoint[6:]) or ".", exist_ok=True)
    sock.bind(endpoint)
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)
