"""A local sparse copy of a remote object, filled with ranged reads as they are needed.

OpenSlide and tifffile read local files. For a TIFF-family slide in a remote store,
a reader opens this mirror instead of a whole download: a sparse file of the object's
size, into which exactly the byte ranges the reader will touch are fetched first
(directories and tag data at open, tiles before they are read). Ranges are coalesced
(gaps up to ``MAX_GAP`` are fetched rather than split into another round trip) and
fetched concurrently in one ``cat_ranges`` call. Bytes never fetched read as zeros, so
every read path calls ``ensure`` first (``readers/tiff_layout.py`` says which ranges).
"""

from __future__ import annotations

import bisect
import contextlib
import io
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence

log = logging.getLogger(__name__)

MAX_GAP = 64 * 1024  # a gap this small costs less than another request
READ_AHEAD = 256 * 1024  # a metadata read fetches at least this much (directories cluster)

# fetch(starts, ends) -> the bytes of each range, in order (one batch of ranged GETs)
FetchRanges = Callable[[Sequence[int], Sequence[int]], list[bytes]]


class RangeMirror:
    """Sparse local file of ``size`` bytes mirroring a remote object."""

    def __init__(self, size: int, fetch: FetchRanges, directory: str, suffix: str = "",
                 max_bytes: int = 1 << 62) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self._fetch = fetch
        fd, self.path = tempfile.mkstemp(dir=directory, prefix=".mirror-", suffix=suffix)
        os.ftruncate(fd, size)
        self._fd = fd
        self._starts: list[int] = []  # fetched, sorted, disjoint, not touching
        self._ends: list[int] = []
        self._pinned: list[tuple[int, int]] = []
        self.held_bytes = 0  # fetched bytes the local file holds now
        self.fetched_bytes = 0  # every byte ever fetched (with refetches after a reset)
        self.requests = 0
        self.resets = 0

    def missing(self, start: int, end: int) -> list[tuple[int, int]]:
        """Sub-ranges of [start, end) not fetched yet."""
        out = []
        i = bisect.bisect_right(self._ends, start)
        pos = start
        while pos < end and i < len(self._starts):
            s, e = self._starts[i], self._ends[i]
            if s >= end:
                break
            if s > pos:
                out.append((pos, s))
            pos = max(pos, e)
            i += 1
        if pos < end:
            out.append((pos, end))
        return out

    def ensure(self, ranges: Iterable[tuple[int, int]]) -> None:
        """Fetch whatever of ``ranges`` (start, end) is missing, in one batch."""
        wanted = [(max(0, start), min(self.size, end)) for start, end in ranges]
        batch = self._batch(wanted)
        if not batch:
            return
        if self.held_bytes + sum(e - s for s, e in batch) > self.max_bytes and self._pinned:
            self._reset()  # over its budget: keep only what the open needs, then go on
            batch = self._batch(wanted + self._pinned)
        starts, ends = [s for s, _ in batch], [e for _, e in batch]
        self.requests += 1
        for (start, end), data in zip(batch, self._fetch(starts, ends), strict=True):
            if len(data) != end - start:
                raise OSError(f"ranged read returned {len(data)} of {end - start} bytes")
            os.pwrite(self._fd, data, start)
            self._mark(start, end)
            self.held_bytes += end - start
            self.fetched_bytes += end - start

    def _batch(self, ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
        missing = [m for start, end in ranges if start < end for m in self.missing(start, end)]
        return _coalesce(sorted(missing), MAX_GAP)

    def pin(self) -> None:
        """What is fetched now stays (re-fetched after a reset): the open's own reads."""
        self._pinned = list(zip(self._starts, self._ends, strict=True))

    def _reset(self) -> None:
        """Drop every fetched byte (the file becomes all hole again): the bound on a
        mirror's disk use. Reads after it fetch what they need again."""
        os.ftruncate(self._fd, 0)
        os.ftruncate(self._fd, self.size)
        self._starts, self._ends = [], []
        self.held_bytes = 0
        self.resets += 1
        log.debug("mirror %s over %d bytes: reset", self.path, self.max_bytes)

    def _mark(self, start: int, end: int) -> None:
        i = bisect.bisect_left(self._ends, start)
        j = bisect.bisect_right(self._starts, end)
        if i < j:
            start, end = min(start, self._starts[i]), max(end, self._ends[j - 1])
        self._starts[i:j] = [start]
        self._ends[i:j] = [end]

    def pread(self, n: int, offset: int) -> bytes:
        """Bytes as they are locally (zeros where nothing was fetched)."""
        return os.pread(self._fd, n, offset)

    def open_reader(self) -> io.RawIOBase:
        """A file object whose reads fetch what they need first (with read-ahead), for
        parsing directories with tifffile."""
        return _MirrorFile(self)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


def _coalesce(ranges: list[tuple[int, int]], gap: int) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in ranges:
        if out and start - out[-1][1] <= gap:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


class _MirrorFile(io.RawIOBase):
    """Seekable read-only view of a mirror; each read fetches its missing bytes first."""

    def __init__(self, mirror: RangeMirror) -> None:
        self._mirror = mirror
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._mirror.size}
        self._pos = max(0, base[whence] + offset)
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), max(0, self._mirror.size - self._pos))
        if n <= 0:
            return 0
        m = self._mirror
        if m.missing(self._pos, self._pos + n):
            m.ensure([(self._pos, max(self._pos + n, self._pos + READ_AHEAD))])
        data = m.pread(n, self._pos)
        buffer[:len(data)] = data
        self._pos += len(data)
        return len(data)
