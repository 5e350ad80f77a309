"""What a worker does with one request: reader cache -> tile cache -> render."""

from __future__ import annotations

import logging
import time
from typing import Any

from config.errors import BadSlide, TileRouterError
from config.histogram import Histogram
from config.logs import REQUEST_ID, request_id_from
from config.settings import Settings
from readers.base import RegionRequest
from readers.factory import ReaderFactory
from readers.formats import TILE_FORMATS
from router.requests import MAX_LIST_PAGE, check_relayed
from workers.reader_cache import ReaderCache
from workers.tile_cache import TileCache

log = logging.getLogger(__name__)

LIST_PAGE_BYTES = 4 * 1024 * 1024  # well inside router.protocol.MAX_HEADER_BYTES
# a worker's metrics ride on its REPLY/HEARTBEAT headers at most this often (the router
# parses every reply header: a histogram on each would cost it for nothing)
METRICS_EVERY = 0.5


class RequestHandler:
    """Owns a worker's caches; ``handle`` returns (client header, payload bytes or None).

    Errors come back as TileRouterError; a read error drops the slide's reader so
    a poisoned OpenSlide handle is reopened on the next request.
    """

    def __init__(self, settings: Settings, on_slides_changed: Any = None) -> None:
        self.settings = settings
        self.factory = ReaderFactory(settings)
        self.decoded = self.factory.decoded
        self.readers = ReaderCache(self.factory.open, settings.reader_cache_size,
                                   on_slides_changed)
        self.tiles = TileCache(settings.tile_cache_bytes)
        self.render = Histogram()  # seconds per request handled, cache hits included
        self._metrics_due = 0.0
        if settings.bench_tiles_by_position:
            log.warning("bench_tiles_by_position is on: tiles are cached by position alone, "
                        "every slide id answers the same tile (benchmarks only)")

    def handle(self, req: dict[str, Any]) -> tuple[dict[str, Any], bytes | None]:
        """Answer a request the gateway validated (``router.requests.check_request``);
        only the cheap ``check_relayed`` is repeated here, and the store confines ids."""
        op = check_relayed(req)["op"]
        if op == "list":
            return self._list(req), None
        slide = req["slide"]
        if not self.factory.is_current(slide):  # replaced in its remote store: forget it all
            log.info("%s changed in its store: reopening", slide)
            self.readers.drop(slide)
            self.tiles.discard_slide(slide)
        try:
            if op == "tile":
                return self._tile(slide, req)
            if op == "info":
                return {"ok": True, **self.readers.get(slide).describe()}, None
            if op == "region":
                return self._region(slide, req)
            return self._associated(slide, req)
        except BadSlide:
            self.readers.drop(slide)
            self.tiles.discard_slide(slide)
            raise

    def _list(self, req: dict[str, Any]) -> dict[str, Any]:
        """A page of the listing: ``prefix`` (a folder, e.g. a store's name) filters,
        ``offset``/``limit`` page; ``next`` is the offset of the next page, if any."""
        slides = self.factory.list()
        prefix = req.get("prefix")
        if isinstance(prefix, str):
            slides = [s for s in slides if str(s["path"]).startswith(prefix)]
        offset = req.get("offset", 0)
        end = min(len(slides), offset + req.get("limit", MAX_LIST_PAGE))
        page, size = [], 0
        for entry in slides[offset:end]:  # and at most LIST_PAGE_BYTES of JSON
            size += (len(str(entry["path"])) + len(str(entry["name"]))
                     + len(str(entry.get("group", ""))) + 48)
            if page and size > LIST_PAGE_BYTES:
                break
            page.append(entry)
        reply: dict[str, Any] = {"ok": True, "slides": page, "total": len(slides)}
        if offset + len(page) < len(slides):
            reply["next"] = offset + len(page)
        return reply

    def _tile(self, slide: str, req: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        fmt = req.get("format") or self.settings.tile_format
        quality = self.settings.tile_quality
        # the benchmark knob drops the slide from the key: copies of one slide, one render
        key = ("" if self.settings.bench_tiles_by_position else slide, req["level"],
               req["col"], req["row"], fmt, quality)
        if req.get("prefetch"):  # fill the cache quietly: no bytes back, no hit/miss counted
            if key not in self.tiles:
                reader = self.readers.get(slide)
                self.tiles.put(key, reader.tile(req["level"], req["col"], req["row"], fmt,
                                                quality))
            return {"ok": True, "prefetched": True}, None
        header = {"ok": True, "mime": TILE_FORMATS[fmt]}
        data = self.tiles.get(key)
        if data is None:
            data = self.readers.get(slide).tile(req["level"], req["col"], req["row"], fmt, quality)
            self.tiles.put(key, data)
        else:
            header["cached"] = True
        return header, data

    def _region(self, slide: str, req: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        """IIIF pixels (readers/region.py); cached with the pyramid level as a first byte."""
        quality = self.settings.tile_quality
        key = (slide, "region", req["x"], req["y"], req["w"], req["h"], req["out_w"],
               req["out_h"], req["rotation"], req["mirror"], req["quality"], req["format"],
               quality)
        header: dict[str, Any] = {"ok": True, "mime": TILE_FORMATS[req["format"]]}
        data = self.tiles.get(key)
        if data is None:
            image, level = self.readers.get(slide).region(
                RegionRequest.from_request(req), self.settings.iiif_max_area, quality)
            data = bytes([level]) + image
            self.tiles.put(key, data)
        else:
            header["cached"] = True
        header["level"] = data[0]
        return header, data[1:]

    def _associated(self, slide: str, req: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        key = (slide, "associated", req["name"], req["size"])
        data = self.tiles.get(key)
        if data is None:
            data = self.readers.get(slide).associated(req["name"], req["size"])
            self.tiles.put(key, data)
        return {"ok": True, "mime": "image/jpeg", "name": req["name"]}, data

    def safe_handle(self, request: dict[str, Any]) -> tuple[dict[str, Any], bytes | None]:
        """``handle`` that turns every failure into an error header (never raises), timed
        into ``render``. The gateway's request id is current meanwhile (every log line
        carries it) and comes back in an error."""
        started = time.monotonic()
        request_id = request_id_from(request.get("request_id"))
        token = REQUEST_ID.set(request_id)
        try:
            return self.handle(request)
        except TileRouterError as exc:
            return {"ok": False, "error": _with_id(exc.to_wire(), request_id)}, None
        except Exception as exc:  # a bug must cost one request, not the worker
            log.exception("unexpected error handling %r", request)
            error = {"code": "internal", "message": str(exc)}
            return {"ok": False, "error": _with_id(error, request_id)}, None
        finally:
            REQUEST_ID.reset(token)
            self.render.observe(time.monotonic() - started)

    def metrics_report(self) -> dict[str, Any] | None:
        """The worker's cumulative metrics for the router (``router.worker_metrics``), or
        None when one was sent less than METRICS_EVERY seconds ago."""
        now = time.monotonic()
        if now < self._metrics_due:
            return None
        self._metrics_due = now + METRICS_EVERY
        report: dict[str, Any] = {"render": self.render.to_wire(),
                                  "tile_cache_bytes": self.tiles.bytes}
        if self.decoded is not None:
            report["decoded_cache_bytes"] = self.decoded.bytes
        return report

    def close(self) -> None:
        self.readers.close()


def _with_id(error: dict[str, Any], request_id: str | None) -> dict[str, Any]:
    if request_id:
        error["request_id"] = request_id
    return error
