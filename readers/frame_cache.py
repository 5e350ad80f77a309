"""Encoded DICOM frames kept by a worker: one LRU bounded in bytes for all its readers.

A DeepZoom tile at 254/1 needs up to four stored frames, and panning asks for each frame
again for the neighbouring tiles: without a cache every tile would cost a WADO-RS round
trip per frame. Frames are immutable (a SOP instance never changes under its UID), so
entries never go stale; the bound is only memory (``dicomweb_frame_cache_bytes``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any


class FrameCache:
    """Thread-safe LRU of frame bytes, bounded by their total size."""

    def __init__(self, maxbytes: int) -> None:
        self.maxbytes = maxbytes
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[Hashable, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return data

    def put(self, key: Hashable, data: bytes) -> None:
        if len(data) > self.maxbytes:
            return  # a frame larger than the whole cache is never kept
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.nbytes -= len(old)
            self._items[key] = data
            self.nbytes += len(data)
            while self.nbytes > self.maxbytes:  # bounded: each pass removes one entry
                _, dropped = self._items.popitem(last=False)
                self.nbytes -= len(dropped)

    def __len__(self) -> int:
        return len(self._items)

    def stats(self) -> dict[str, Any]:
        return {"hits": self.hits, "misses": self.misses, "bytes": self.nbytes,
                "frames": len(self._items)}
