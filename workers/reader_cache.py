"""LRU of open slide readers: a slide is opened once per worker and closed on eviction."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from cachetools import LRUCache

from readers.base import SlideReader

log = logging.getLogger(__name__)


class _ClosingLRU(LRUCache):
    def __init__(self, maxsize: int, on_evict: Callable[[str, SlideReader], None]) -> None:
        super().__init__(maxsize)
        self._on_evict = on_evict

    def popitem(self) -> tuple[str, SlideReader]:
        key, reader = super().popitem()
        self._on_evict(key, reader)
        return key, reader


class ReaderCache:
    """Open readers by slide key; ``on_change`` fires whenever the set of open slides changes."""

    def __init__(
        self,
        opener: Callable[[str], SlideReader],
        maxsize: int = 16,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._opener = opener
        self._on_change = on_change or (lambda: None)
        self._lru = _ClosingLRU(maxsize, self._evicted)
        self.opens = 0
        self.open_seconds = 0.0  # spent in successful opens (the router sizes affinity by it)
        self.evictions = 0

    def get(self, slide: str) -> SlideReader:
        reader = self._lru.get(slide)
        if reader is None:
            started = time.monotonic()
            reader = self._opener(slide)
            self.open_seconds += time.monotonic() - started
            self.opens += 1
            self._lru[slide] = reader
            log.debug("opened %s (%d open)", slide, len(self._lru))
            self._on_change()
        return reader

    def drop(self, slide: str) -> None:
        """Close and forget a reader (e.g. after a read error poisoned its handle)."""
        reader = self._lru.pop(slide, None)
        if reader is not None:
            _close(slide, reader)
            self._on_change()

    def slides(self) -> list[str]:
        return list(self._lru.keys())

    def __contains__(self, slide: str) -> bool:
        return slide in self._lru

    def __len__(self) -> int:
        return len(self._lru)

    def close(self) -> None:
        while self._lru:
            slide, reader = self._lru.popitem()

    def _evicted(self, slide: str, reader: SlideReader) -> None:
        self.evictions += 1
        _close(slide, reader)
        self._on_change()


def _close(slide: str, reader: SlideReader) -> None:
    try:
        reader.close()
    except Exception:  # a failing close must not take the worker down
        log.exception("closing reader for %s failed", slide)
