"""Every router a gateway knows, with slides sharded over them and failover between them.

Each slide has one router where its affinity is decided: the first live router (one that
answers heartbeats and has workers) in the
slide's rendezvous-hash order over all configured routers, so every gateway picks the
same one without talking to the others, and a dead router's slides spread over the
rest (the others keep theirs). A request whose router goes silent while it is pending
(``RouterLost``), or that a draining router answers ``unavailable``, is re-sent to the
next live router in its order; the reply of the first router, if it comes back late, is
dropped by its link (it no longer knows the request), so a client gets one reply.

Routers named by ``dns+tcp://NAME:PORT`` (config/endpoints.py) are re-resolved every
``router_dns_interval`` seconds off the event loop: a new address gets a link, one that
left is dropped and its pending requests fail over like a lost router's.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
from typing import Any

import zmq

from config.endpoints import RouterEndpoints, changes
from config.errors import Unavailable
from config.settings import Settings
from router.policy import rendezvous_score
from wsgateway.relay import Reply, RouterClient, RouterLost

log = logging.getLogger(__name__)


def rendezvous_order(key: str, endpoints: list[str]) -> list[int]:
    """Indexes of ``endpoints`` in ``key``'s rendezvous (highest random weight) order, by
    the router's own hash (``rendezvous_score``, the endpoint and the slide as its two
    parts). The weight is keyed on the endpoint itself, not its place in the list, so a
    router that joins or leaves moves only its own slides."""
    slide = key.encode()
    return sorted(range(len(endpoints)), key=lambda i: rendezvous_score(endpoints[i], slide),
                  reverse=True)


class RouterPool:
    """The gateway's routers; ``request`` as ``RouterClient.request``, with failover."""

    def __init__(self, settings: Settings, context: zmq.Context | None = None) -> None:
        self.settings = settings
        self.context = context
        self.endpoints = RouterEndpoints(settings.frontend)
        self.links: list[RouterClient] = []
        self.resent = 0  # requests re-sent to another router after theirs was lost
        self._spread = itertools.count()  # slide-less requests (list, stats) rotate
        self._dns: asyncio.Task[None] | None = None
        self._look_again = asyncio.Event()  # a router disconnected: has its address left?

    async def start(self) -> None:
        await self._follow(await self._resolve(), joined=False)
        if self.endpoints.dynamic:
            self._dns = asyncio.create_task(self._follow_dns(), name="router-dns")

    async def close(self) -> None:
        if self._dns is not None:
            self._dns.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dns
        for link in self.links:
            await link.close()

    def _resolve(self) -> asyncio.Future[list[str]]:
        """``endpoints.resolve`` on a daemon thread: a DNS server that does not answer
        neither blocks the event loop nor keeps a stopping gateway from exiting."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[list[str]] = loop.create_future()

        def settle(result: list[str] | None, error: BaseException | None) -> None:
            if not done.done():
                if error is not None:
                    done.set_exception(error)
                else:
                    done.set_result(result or [])

        def run() -> None:
            try:
                result, error = self.endpoints.resolve(), None
            except Exception as exc:  # handed to the awaiting coroutine
                result, error = None, exc
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(settle, result, error)

        threading.Thread(target=run, name="router-dns", daemon=True).start()
        return done

    async def _follow_dns(self) -> None:
        """Routers that joined get a link; those that left are dropped, their pending
        requests failed over as for a lost router (``RouterLost``: re-sent). Every
        ``router_dns_interval``, and at once when a router's connection drops: one that
        was told to stop has usually left the name already, and what was sent it after it
        exited would otherwise wait out the heartbeat window."""
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._look_again.wait(), self.settings.router_dns_interval)
            self._look_again.clear()
            try:
                await self._follow(await self._resolve())
            except Exception:  # never let one bad round end the following
                log.exception("following the routers' DNS name failed")

    async def _follow(self, endpoints: list[str], joined: bool = True) -> None:
        added, removed = changes([ln.endpoint for ln in self.links], endpoints)
        for endpoint in added:
            link = RouterClient(self.settings, self.context, endpoint)
            # one that joins later gets no shard until its heartbeat says it has workers
            link.has_workers = not joined
            if self.endpoints.dynamic:  # a router that exits may have left the name: look
                link.on_disconnect = self._look_again.set
            await link.start()
            self.links = [*self.links, link]
            if joined:
                log.info("router %s joined", endpoint)
        for link in [ln for ln in self.links if ln.endpoint in removed]:
            self.links = [ln for ln in self.links if ln is not link]
            log.info("router %s left: re-sending its %d pending requests", link.endpoint,
                     link.pending)
            await link.close(RouterLost("router left"))

    @property
    def available(self) -> bool:
        return any(link.available for link in self.links)

    @property
    def pending(self) -> int:
        return sum(link.pending for link in self.links)

    @property
    def reconnects(self) -> int:
        return sum(link.reconnects for link in self.links)

    def order(self, request: dict[str, Any]) -> list[RouterClient]:
        """The routers to try for ``request``, its shard's router first."""
        slide = request.get("slide")
        if len(self.links) == 1:
            return self.links
        links = self.links
        if isinstance(slide, str):
            return [links[i] for i in rendezvous_order(slide, [ln.endpoint for ln in links])]
        start = next(self._spread) % max(1, len(links))
        return links[start:] + links[:start]

    async def request(self, request: dict[str, Any], timeout: float | None = None) -> Reply:
        """Send to the first live router in the request's order; on a lost router or a
        draining router's ``unavailable``, the next one (each router once)."""
        lost: Unavailable | None = None
        order = self.order(request)
        live = [ln for ln in order if ln.available and ln.has_workers]
        for link in live + [ln for ln in order if ln.available and not ln.has_workers]:
            try:
                reply = await link.request(request, timeout)
            except RouterLost as exc:
                lost = exc
                self.resent += 1
                log.info("router %s lost with a request pending: re-sending", link.endpoint)
                continue
            except Unavailable as exc:  # could not even be sent there: the next one
                lost = exc
                continue
            error = reply.header.get("error") if not reply.header.get("ok") else None
            if isinstance(error, dict) and error.get("code") == "unavailable":
                lost = Unavailable(str(error.get("message", "router unavailable")))
                self.resent += 1
                continue
            return reply
        raise lost or Unavailable("no router reachable; retrying the connections")

    def stats(self) -> list[dict[str, Any]]:
        """Each router's health as this gateway sees it."""
        return [{"endpoint": link.endpoint, "available": link.available,
                 "has_workers": link.has_workers,
                 "pending": link.pending, "reconnects": link.reconnects}
                for link in self.links]
