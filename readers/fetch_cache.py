"""Whole remote objects kept on local disk, for readers that need a local file.

OpenSlide reads local paths only, so a slide from a remote store is fetched once into
this cache and opened there. Each version of an object (its ETag) is its own file,
written to a temporary name and renamed into place, so a reader never sees a partial
file or a mix of two versions; the cache is an LRU by bytes shared by every process
on the host that uses the same folder (a file evicted while open stays readable).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

PART = ".part"


def default_cache_dir() -> str:
    return os.path.join(tempfile.gettempdir(), f"tilerouter-fetched-{os.getuid()}")


class FetchCache:
    """Fetched objects under ``root``, at most ``max_bytes`` of them (least recently used
    go first; the file just fetched is never evicted by its own fetch)."""

    def __init__(self, root: str, max_bytes: int) -> None:
        self.root = root or default_cache_dir()
        self.max_bytes = max_bytes
        os.makedirs(self.root, exist_ok=True)
        self.hits = 0
        self.fetches = 0
        self.fetched_bytes = 0
        self._lock = threading.Lock()

    def path_for(self, source: str, version: str, suffix: str) -> str:
        name = hashlib.sha256(source.encode()).hexdigest()[:32]
        tag = hashlib.sha256(version.encode()).hexdigest()[:16]
        return os.path.join(self.root, f"{name}-{tag}{suffix}")

    def fetch(self, source: str, version: str, suffix: str, size: int,
              download: Callable[[str], None]) -> str:
        """The local file for ``source`` at ``version``: cached, or ``download(tmp)``ed.

        ``size`` is the object's size as the store reported it: a download of any other
        length is refused (ValueError), never kept."""
        final = self.path_for(source, version, suffix)
        try:
            os.utime(final)  # a hit: mark it recently used
            self.hits += 1
            return final
        except FileNotFoundError:
            pass
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".fetch-", suffix=PART)
        os.close(fd)
        try:
            download(tmp)
            got = os.path.getsize(tmp)
            if got != size:
                raise ValueError(f"fetched {got} bytes, the store said {size}")
            os.replace(tmp, final)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self.fetches += 1
        self.fetched_bytes += size
        self._evict(keep=final)
        return final

    def _evict(self, keep: str) -> None:
        with self._lock:
            entries = []
            for entry in os.scandir(self.root):
                if entry.name.startswith(".") or not entry.is_file():
                    continue
                try:
                    st = entry.stat()
                except FileNotFoundError:  # another process evicted it
                    continue
                entries.append((st.st_mtime, st.st_size, entry.path))
            total = sum(size for _, size, _ in entries)
            for _, size, path in sorted(entries):
                if total <= self.max_bytes:
                    break
                if path == keep:
                    continue
                try:
                    os.unlink(path)
                    total -= size
                except FileNotFoundError:
                    pass
            log.debug("fetch cache %s: %d bytes kept", self.root, total)
