"""A gateway's hand-off on SIGTERM: its clients move to a sibling without an error reply.

Several gateways may share one port (SO_REUSEPORT, ``--gateways N``) or sit behind a
load balancer. A gateway told to stop closes its listening sockets first, so the kernel
(or the balancer, whose connects now fail) sends every new connection to a sibling; then
it sends each websocket the ``reconnect`` notice (README "Websocket protocol"). A client
that knows the notice opens a new connection at once, sends new requests there, and
closes the old one once its replies are in; every request this gateway has, or still
receives, is answered as usual meanwhile. A socket that stays quiet after the notice (a
client that does not know it, or one that has moved and not closed yet) is closed with
1001; so is every socket left when ``drain_timeout`` passes (its client re-sends what is
unanswered, on its new connection). HTTP keep-alive connections get ``Connection:
close`` on their next reply and are closed once idle.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import tornado.httpserver

if TYPE_CHECKING:
    from wsgateway.gateway import Gateway

log = logging.getLogger(__name__)

# a websocket with nothing in flight that sent nothing for this long after the notice is
# closed: its client has moved (or ignores the notice and can reconnect like after a drop)
DRAIN_QUIET = 0.5
CLOSE_WAIT = 1.0  # seconds for close handshakes and idle HTTP connections at the end
POLL = 0.02


async def hand_off(server: tornado.httpserver.HTTPServer, gateway: Gateway,
                   drain_timeout: float) -> None:
    """Stop accepting, tell websocket clients to move, answer what they still send until
    they have moved (at most ``drain_timeout`` seconds), then close every connection."""
    loop = asyncio.get_running_loop()
    server.stop()  # listening sockets closed: new connections go to a sibling
    server.conn_params.no_keep_alive = True  # the next HTTP reply says Connection: close
    gateway.draining = True
    sockets = list(gateway.sockets)
    for handler in sockets:
        handler.notify_draining()
    log.info("gateway handing off: %d websockets told to reconnect", len(sockets))
    deadline = loop.time() + drain_timeout
    quiet_closed = 0
    while loop.time() < deadline:
        open_sockets = [h for h in gateway.sockets if not h.closing()]
        for handler in open_sockets:
            if handler.quiet_for() >= DRAIN_QUIET:
                quiet_closed += 1
                handler.close(1001, "gateway shutting down")
        if not open_sockets and not gateway.client.pending:
            break
        await asyncio.sleep(POLL)
    left = [h for h in gateway.sockets if not h.closing()]
    for handler in left:  # drain_timeout passed: the client re-sends what is unanswered
        handler.close(1001, "gateway shutting down")
    end = loop.time() + CLOSE_WAIT
    while gateway.sockets and loop.time() < end:
        await asyncio.sleep(POLL)
    try:  # idle keep-alive connections (a request still running here is cut)
        await asyncio.wait_for(server.close_all_connections(), max(0.0, end - loop.time()))
    except TimeoutError:
        log.warning("HTTP connections still open after the drain")
    log.info("gateway hand-off done: of %d websockets, %d closed by their client, %d "
             "closed quiet, %d closed at drain_timeout", len(sockets),
             max(0, len(sockets) - quiet_closed - len(left)), quiet_closed, len(left))
