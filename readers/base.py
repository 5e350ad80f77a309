"""The one interface every slide reader implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class SlideReader(ABC):
    """An open slide that can describe itself and render DeepZoom tiles.

    Readers are not thread-safe; a worker owns its readers. ``close`` releases the
    file handle and is called by the reader cache on eviction.
    """

    path: str

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """JSON-ready description: dimensions, DeepZoom geometry, vendor, MPP, properties."""

    @abstractmethod
    def tile(self, level: int, col: int, row: int, fmt: str, quality: int) -> bytes:
        """Encoded DeepZoom tile; OutOfRange for a tile outside the pyramid."""

    @abstractmethod
    def associated(self, name: str, size: int) -> bytes:
        """JPEG of the thumbnail or a named associated image fitted in size x size."""

    @abstractmethod
    def close(self) -> None:
        """Release the underlying file."""
