"""LRU of encoded tiles bounded in bytes, so hot tiles skip decoding and encoding."""

from __future__ import annotations

from collections.abc import Hashable

from cachetools import LRUCache


class TileCache:
    """Encoded bytes by key; ``maxbytes=0`` disables caching."""

    def __init__(self, maxbytes: int) -> None:
        self._lru: LRUCache | None = LRUCache(maxbytes, getsizeof=len) if maxbytes > 0 else None
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> bytes | None:
        data = self._lru.get(key) if self._lru is not None else None
        if data is None:
            self.misses += 1
        else:
            self.hits += 1
        return data

    def __contains__(self, key: Hashable) -> bool:
        return self._lru is not None and key in self._lru

    def put(self, key: Hashable, data: bytes) -> None:
        if self._lru is not None and len(data) <= self._lru.maxsize:
            self._lru[key] = data

    def discard_slide(self, slide: str) -> None:
        """Forget every tile of one slide (its file changed or turned out to be bad)."""
        if self._lru is not None:
            for key in [k for k in self._lru if k[0] == slide]:
                del self._lru[key]

    @property
    def bytes(self) -> int:
        return int(self._lru.currsize) if self._lru is not None else 0

    def __len__(self) -> int:
        return len(self._lru) if self._lru is not None else 0

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "bytes": self.bytes, "tiles": len(self)}
