"""Every router a gateway knows, with slides sharded over them and failover between them.

Each slide has one router where its affinity is decided: the first live router (one that
answers heartbeats and has workers) in the
slide's rendezvous-hash order over all configured routers, so every gateway picks the
same one without talking to the others, and a dead router's slides spread over the
rest (the others keep theirs). A request whose router goes silent while it is pending
(``RouterLost``), or that a draining router answers ``unavailable``, is re-sent to the
next live router in its order; the reply of the first router, if it comes back late, is
dropped by its link (it no longer knows the request), so a client gets one reply.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from typing import Any

import zmq

from config.errors import Unavailable
from config.lists import endpoint_list
from config.settings import Settings
from wsgateway.relay import Reply, RouterClient, RouterLost

log = logging.getLogger(__name__)


def rendezvous_order(key: str, count: int) -> list[int]:
    """Router indexes in ``key``'s rendezvous (highest random weight) order."""
    def weight(i: int) -> bytes:
        return hashlib.blake2b(f"{i}\0{key}".encode(), digest_size=8).digest()

    return sorted(range(count), key=weight, reverse=True)


class RouterPool:
    """The gateway's routers; ``request`` as ``RouterClient.request``, with failover."""

    def __init__(self, settings: Settings, context: zmq.Context | None = None) -> None:
        self.settings = settings
        self.links = [RouterClient(settings, context, endpoint)
                      for endpoint in endpoint_list(settings.frontend)]
        self.resent = 0  # requests re-sent to another router after theirs was lost
        self._spread = itertools.count()  # slide-less requests (list, stats) rotate

    async def start(self) -> None:
        for link in self.links:
            await link.start()

    async def close(self) -> None:
        for link in self.links:
            await link.close()

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
        if isinstance(slide, str):
            return [self.links[i] for i in rendezvous_order(slide, len(self.links))]
        start = next(self._spread) % len(self.links)
        return self.links[start:] + self.links[:start]

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
