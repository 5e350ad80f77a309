"""The one interface every slide reader implements, whatever store its bytes come from.

Callers (the worker's request handler, the gateway's stored-tile reads, IIIF regions)
hold a ``SlideReader`` from ``readers.factory`` and use nothing else of it: no reader's
library object, file handle or index is reached from outside ``readers/``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import openslide

# what a read of damaged slide data raises: OpenSlide's own error, Pillow's decoders'
# OSError, numpy/tifffile's ValueError; readers turn them into BadSlide
READ_ERRORS = (openslide.OpenSlideError, OSError, ValueError)


@dataclass(frozen=True, slots=True)
class RegionRequest:
    """A validated ``region`` op (see ``router.requests.check_request``)."""

    x: int
    y: int
    w: int
    h: int
    out_w: int
    out_h: int
    fmt: str = "jpeg"
    quality: str = "default"
    rotation: float = 0.0
    mirror: bool = False

    @classmethod
    def from_request(cls, req: dict) -> RegionRequest:
        return cls(req["x"], req["y"], req["w"], req["h"], req["out_w"], req["out_h"],
                   req.get("format") or "jpeg", req.get("quality") or "default",
                   float(req.get("rotation") or 0), bool(req.get("mirror")))


class SlideReader(ABC):
    """An open slide that describes itself and renders DeepZoom tiles and regions.

    Readers are not thread-safe, except ``stored_tile``; whoever opened a reader owns it.
    ``close`` releases its files and is called by the owner's cache on eviction.
    """

    name: str

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """JSON-ready description: dimensions, DeepZoom geometry, vendor, MPP, properties."""

    @abstractmethod
    def tile(self, level: int, col: int, row: int, fmt: str, quality: int) -> bytes:
        """Encoded DeepZoom tile; OutOfRange outside the pyramid, BadSlide for bad data."""

    @abstractmethod
    def stored_tile(self, level: int, col: int, row: int) -> bytes | None:
        """The file's own JPEG bytes when they are exactly this DeepZoom tile, else None.

        Cheap (one read, no decode) and safe from any thread: the gateway serves these
        itself. None means "render it" (``tile``), never an error."""

    @abstractmethod
    def region(self, req: RegionRequest, max_area: int, jpeg_quality: int
               ) -> tuple[bytes, int]:
        """An encoded level-0 region at the requested output size and the pyramid level
        it was read from; too_large past ``max_area`` output pixels."""

    @abstractmethod
    def associated(self, name: str, size: int) -> bytes:
        """JPEG of the thumbnail or a named associated image fitted in size x size."""

    @abstractmethod
    def close(self) -> None:
        """Release the underlying files."""
