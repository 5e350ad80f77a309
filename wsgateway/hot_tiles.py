"""In front of the router: a byte-bounded LRU of hot tiles, and request coalescing.

Two viewers asking for the same tile at once cause one render: the second awaits the
first's reply. A repeated tile never leaves the gateway process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from cachetools import LRUCache

from wsgateway.relay import Reply

CACHEABLE_OPS = ("tile", "associated", "region")


def cache_key(request: dict[str, Any]) -> Hashable | None:
    """Image requests are keyed by every (validated, scalar) field; others aren't cached."""
    if request.get("op") not in CACHEABLE_OPS:
        return None
    return tuple(sorted(request.items()))


class HotTiles:
    def __init__(self, maxbytes: int) -> None:
        self._lru: LRUCache | None = (
            LRUCache(maxbytes, getsizeof=lambda r: len(r.payload)) if maxbytes > 0 else None)
        self._inflight: dict[Hashable, asyncio.Future[Reply]] = {}
        self.hits = 0
        self.coalesced = 0
        self.misses = 0

    def get(self, request: dict[str, Any]) -> Reply | None:
        """The cached reply for a validated request (counted as a hit), else None."""
        key = cache_key(request)
        return self._cached(key) if key is not None else None

    def _cached(self, key: Hashable) -> Reply | None:
        reply = self._lru.get(key) if self._lru is not None else None
        if reply is not None:
            self.hits += 1
        return reply

    async def fetch(self, request: dict[str, Any],
                    send: Callable[[dict[str, Any]], Awaitable[Reply]]) -> Reply:
        key = cache_key(request)
        if key is None:
            return await send(request)
        reply = self._cached(key)  # it may have arrived since the caller's get()
        if reply is not None:
            return reply
        pending = self._inflight.get(key)
        if pending is not None:
            self.coalesced += 1
            return await asyncio.shield(pending)
        self.misses += 1
        fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            reply = await send(request)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: nobody else may be waiting
            raise
        finally:
            self._inflight.pop(key, None)
        fut.set_result(reply)
        if (self._lru is not None and reply.header.get("ok") and reply.payload is not None
                and len(reply.payload) <= self._lru.maxsize):
            self._lru[key] = reply
        return reply

    def stats(self) -> dict[str, int]:
        size = int(self._lru.currsize) if self._lru is not None else 0
        return {"hot_hits": self.hits, "hot_misses": self.misses,
                "coalesced": self.coalesced, "hot_bytes": size}
