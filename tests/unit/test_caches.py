"""Worker caches: open-slide LRU (closes what it evicts) and the byte-bounded tile LRU."""

from __future__ import annotations

from typing import Any

import pytest

from readers.base import RegionRequest, SlideReader
from workers.reader_cache import ReaderCache
from workers.tile_cache import TileCache


class RecordingReader(SlideReader):
    """A real (trivial) SlideReader that records close(); optionally fails to close."""

    def __init__(self, path: str, closed: list[str], fail_close: bool = False) -> None:
        self.path = path
        self._closed = closed
        self._fail_close = fail_close
        self.is_closed = False

    def describe(self) -> dict[str, Any]:
        return {"slide": self.path}

    def tile(self, level: int, col: int, row: int, fmt: str, quality: int) -> bytes:
        return f"{self.path}:{level}:{col}:{row}".encode()

    def stored_tile(self, level: int, col: int, row: int) -> bytes | None:
        return None

    def region(self, req: RegionRequest, max_area: int, jpeg_quality: int
               ) -> tuple[bytes, int]:
        return f"{self.path}:region".encode(), 0

    def associated(self, name: str, size: int) -> bytes:
        return b""

    def close(self) -> None:
        self.is_closed = True
        self._closed.append(self.path)
        if self._fail_close:
            raise OSError("close failed")


class Harness:
    """ReaderCache plus counters of opener calls, closes and on_change notifications."""

    def __init__(self, maxsize: int, fail_close: frozenset[str] = frozenset()) -> None:
        self.opened: list[str] = []
        self.closed: list[str] = []
        self.changes = 0
        self.fail_close = fail_close
        self.cache = ReaderCache(self._open, maxsize, self._changed)

    def _open(self, slide: str) -> RecordingReader:
        self.opened.append(slide)
        return RecordingReader(slide, self.closed, slide in self.fail_close)

    def _changed(self) -> None:
        self.changes += 1


def test_reader_opened_once_per_slide() -> None:
    h = Harness(maxsize=4)
    first = h.cache.get("a")
    assert h.cache.get("a") is first and h.cache.get("a") is first
    h.cache.get("b")
    assert h.opened == ["a", "b"] and h.cache.opens == 2
    assert h.cache.slides() == ["a", "b"] and "a" in h.cache and len(h.cache) == 2
    assert h.closed == []


def test_lru_eviction_closes_the_least_recently_used() -> None:
    """A get() refreshes recency; the slide evicted beyond maxsize is closed exactly once."""
    h = Harness(maxsize=2)
    a, b = h.cache.get("a"), h.cache.get("b")
    h.cache.get("a")  # a is now most recent
    h.cache.get("c")
    assert h.closed == ["b"] and isinstance(b, RecordingReader) and b.is_closed
    assert not a.is_closed  # type: ignore[attr-defined]
    assert set(h.cache.slides()) == {"a", "c"} and h.cache.evictions == 1
    h.cache.get("b")  # reopened, evicting a (the LRU now)
    assert h.opened == ["a", "b", "c", "b"] and h.closed == ["b", "a"]


def test_on_change_fires_on_open_evict_and_drop() -> None:
    h = Harness(maxsize=1)
    h.cache.get("a")
    assert h.changes == 1
    h.cache.get("a")  # hit: open set unchanged
    assert h.changes == 1
    h.cache.get("b")  # evict a + open b
    assert h.changes == 3
    h.cache.drop("b")
    assert h.changes == 4 and h.closed == ["a", "b"] and len(h.cache) == 0
    h.cache.drop("b")  # nothing open: no close, no notification
    assert h.changes == 4 and h.closed == ["a", "b"]


def test_drop_closes_and_next_get_reopens() -> None:
    h = Harness(maxsize=4)
    first = h.cache.get("a")
    h.cache.drop("a")
    assert first.is_closed  # type: ignore[attr-defined]
    assert "a" not in h.cache
    assert h.cache.get("a") is not first and h.opened == ["a", "a"]


def test_failing_close_does_not_propagate() -> None:
    """A reader whose close() raises must not break eviction, drop or shutdown."""
    h = Harness(maxsize=1, fail_close=frozenset({"a", "b", "c"}))
    h.cache.get("a")
    h.cache.get("b")  # evicts a, whose close raises
    h.cache.drop("b")
    h.cache.get("c")
    h.cache.close()
    assert h.closed == ["a", "b", "c"] and len(h.cache) == 0


def test_close_closes_everything() -> None:
    h = Harness(maxsize=8)
    for s in "abcd":
        h.cache.get(s)
    h.cache.close()
    assert sorted(h.closed) == list("abcd") and len(h.cache) == 0


def test_opener_failure_caches_nothing() -> None:
    calls: list[str] = []

    def opener(slide: str) -> SlideReader:
        calls.append(slide)
        raise ValueError("cannot open")

    cache = ReaderCache(opener, 2)
    for _ in range(2):
        with pytest.raises(ValueError):
            cache.get("bad")
    assert calls == ["bad", "bad"] and len(cache) == 0 and cache.opens == 0


# --- tile cache --------------------------------------------------------------------------


def test_tile_cache_bounded_in_bytes_evicts_oldest() -> None:
    cache = TileCache(maxbytes=100)
    for i in range(10):
        cache.put(("s", 0, i, 0), bytes([i]) * 30)
        assert cache.bytes <= 100
    assert cache.bytes == 90 and len(cache) == 3
    assert cache.get(("s", 0, 6, 0)) is None  # oldest ones went first
    assert cache.get(("s", 0, 9, 0)) == bytes([9]) * 30
    assert cache.get(("s", 0, 7, 0)) == bytes([7]) * 30


def test_tile_cache_get_refreshes_recency() -> None:
    cache = TileCache(maxbytes=100)
    cache.put("k1", b"a" * 40)
    cache.put("k2", b"b" * 40)
    assert cache.get("k1") is not None
    cache.put("k3", b"c" * 40)  # must evict k2, not the just-read k1
    assert cache.get("k1") == b"a" * 40 and cache.get("k2") is None


def test_tile_cache_counts_hits_and_misses() -> None:
    cache = TileCache(maxbytes=1000)
    assert cache.get("x") is None
    cache.put("x", b"data")
    assert cache.get("x") == b"data" and cache.get("x") == b"data"
    assert cache.get("y") is None
    assert cache.stats() == {"hits": 2, "misses": 2, "bytes": 4, "tiles": 1}


def test_tile_cache_disabled_with_zero_bytes() -> None:
    cache = TileCache(maxbytes=0)
    cache.put(("s", 0, 0, 0), b"tile")
    assert cache.get(("s", 0, 0, 0)) is None
    cache.discard_slide("s")
    assert cache.stats() == {"hits": 0, "misses": 1, "bytes": 0, "tiles": 0}


def test_tile_cache_ignores_items_larger_than_the_cache() -> None:
    """One huge item must neither raise nor flush everything else."""
    cache = TileCache(maxbytes=100)
    cache.put("small", b"s" * 50)
    cache.put("huge", b"h" * 101)
    assert cache.get("huge") is None and cache.get("small") == b"s" * 50
    cache.put("exact", b"e" * 100)  # exactly maxbytes fits (evicting the rest)
    assert cache.get("exact") == b"e" * 100 and cache.bytes == 100


def test_tile_cache_discard_slide() -> None:
    cache = TileCache(maxbytes=10_000)
    for slide in ("a.tiff", "b.tiff"):
        for col in range(3):
            cache.put((slide, 0, col, 0, "jpeg", 75), b"x" * 10)
    cache.put(("a.tiff", "associated", "thumbnail", 256), b"t" * 10)
    cache.discard_slide("a.tiff")
    assert len(cache) == 3 and cache.bytes == 30
    assert cache.get(("b.tiff", 0, 1, 0, "jpeg", 75)) == b"x" * 10
    assert cache.get(("a.tiff", 0, 1, 0, "jpeg", 75)) is None
    cache.discard_slide("absent.tiff")
    assert len(cache) == 3
