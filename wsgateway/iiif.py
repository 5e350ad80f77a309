"""IIIF Image API 3.0 (compliance level 2, plus mirroring, arbitrary rotation, bitonal,
upscaling and both link headers) over the same router and workers as everything else.

    GET /iiif/{identifier}                                      303 -> info.json
    GET /iiif/{identifier}/info.json                            image information
    GET /iiif/{identifier}/{region}/{size}/{rotation}/{quality}.{format}

``identifier`` is the slide path relative to the slide root with its slashes
percent-encoded (``sub%2Fb.tiff``, the form ``id`` uses). Unencoded slashes are
accepted too: the URL is parsed from the right (four image parameters, or
``info.json``), so ``/iiif/sub/b.tiff/full/max/0/default.jpg`` is unambiguous.

The gateway resolves region and size against the slide's level-0 dimensions (from
the ``info`` op, cached briefly per gateway) and sends the workers one ``region``
request with plain pixel numbers; ``readers/region.py`` renders it from the best
pyramid level. The level used is reported in ``X-Tilerouter-Level``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from cachetools import TTLCache

from config.errors import BadRequest, MessageTooLarge, TileRouterError
from readers.formats import MAX_REGION_EDGE
from readers.slide_ids import normalize_slide_path
from router.protocol import payload_bytes
from wsgateway.http import ApiError, RelayHandler

if TYPE_CHECKING:
    from wsgateway.gateway import Gateway

CONTEXT = "http://iiif.io/api/image/3/context.json"
PROTOCOL = "http://iiif.io/api/image"
PROFILE = "level2"
PROFILE_LINK = '<http://iiif.io/api/image/3/level2.json>;rel="profile"'
LD_JSON = f'application/ld+json;profile="{CONTEXT}"'
FORMATS = {"jpg": "jpeg", "png": "png"}  # IIIF extension -> region op format
QUALITIES = ("default", "color", "gray", "bitonal")
EXTRA_QUALITIES = ["color", "gray", "bitonal"]
EXTRA_FEATURES = ["canonicalLinkHeader", "mirroring", "profileLinkHeader",
                  "rotationArbitrary", "sizeUpscaling"]
DIMS_TTL = 30.0  # seconds a gateway trusts a slide's dimensions without asking again

_INT = r"\d{1,10}"
_NUM = r"(?:\d{1,10}(?:\.\d{0,10})?|\.\d{1,10})"
_REGION_PX = re.compile(rf"({_INT}),({_INT}),({_INT}),({_INT})")
_REGION_PCT = re.compile(rf"pct:({_NUM}),({_NUM}),({_NUM}),({_NUM})")
_SIZE_WH = re.compile(rf"(!?)({_INT})?,({_INT})?")
_SIZE_PCT = re.compile(rf"pct:({_NUM})")
_ROTATION = re.compile(rf"(!?)({_NUM})")


class IIIFError(ApiError):
    """An error with the status the IIIF spec asks for (JSON body like the rest)."""

    def __init__(self, status: int, exc: TileRouterError) -> None:
        super().__init__(exc)
        self.status_code = status


def bad(message: str) -> IIIFError:
    return IIIFError(400, BadRequest(message))


def too_large(message: str) -> IIIFError:
    return IIIFError(400, MessageTooLarge(message))


# --- parameters (pure functions of the URL and the image size) ------------------------


@dataclass(frozen=True, slots=True)
class Limits:
    max_area: int
    max_width: int = MAX_REGION_EDGE
    max_height: int = MAX_REGION_EDGE


def _round(value: float) -> int:
    return int(math.floor(value + 0.5))


def parse_region(text: str, width: int, height: int) -> tuple[int, int, int, int]:
    """``full``, ``square``, ``x,y,w,h`` or ``pct:x,y,w,h`` -> level-0 x, y, w, h,
    cropped at the image's edges; 400 when empty or entirely outside."""
    if text == "full":
        return 0, 0, width, height
    if text == "square":
        side = min(width, height)
        return (width - side) // 2, (height - side) // 2, side, side
    m = _REGION_PX.fullmatch(text)
    if m:
        x, y, w, h = (int(v) for v in m.groups())
    else:
        m = _REGION_PCT.fullmatch(text)
        if not m:
            raise bad(f"region {text[:40]!r} is not full, square, x,y,w,h or pct:x,y,w,h")
        px, py, pw, ph = (float(v) for v in m.groups())
        x, y = _round(px * width / 100), _round(py * height / 100)
        # round both edges, so adjacent percentage regions neither overlap nor leave gaps
        w = _round((px + pw) * width / 100) - x
        h = _round((py + ph) * height / 100) - y
    if w <= 0 or h <= 0:
        raise bad(f"region {text!r} has zero width or height")
    if x >= width or y >= height:
        raise bad(f"region {text!r} lies outside the {width}x{height} image")
    return x, y, min(w, width - x), min(h, height - y)


def _fit(w: int, h: int, limits: Limits, upscale: bool) -> tuple[int, int]:
    """The largest size with w:h's aspect ratio within the limits (Implementation Notes 4)."""
    scale = min(math.sqrt(limits.max_area / (w * h)), limits.max_width / w,
                limits.max_height / h)
    if not upscale and scale >= 1:
        return w, h
    ow, oh = max(1, math.floor(w * scale)), max(1, math.floor(h * scale))
    while ow * oh > limits.max_area:  # float rounding: never exceed the area
        ow, oh = max(1, ow - 1), max(1, oh - 1)
    return ow, oh


def parse_size(text: str, rw: int, rh: int, limits: Limits) -> tuple[int, int]:
    """Output size for a ``rw x rh`` region: ``max``, ``w,``, ``,h``, ``pct:n``, ``w,h``,
    ``!w,h``, each optionally prefixed with ``^`` (upscaling)."""
    upscale = text.startswith("^")
    spec = text[1:] if upscale else text
    if spec == "max":
        return _fit(rw, rh, limits, upscale)
    m = _SIZE_PCT.fullmatch(spec)
    if m:
        pct = float(m.group(1))
        if pct <= 0:
            raise bad("size pct:n must be greater than 0")
        if pct > 100 and not upscale:
            raise bad(f"size {text!r} upscales the region; use ^pct:n")
        ow, oh = max(1, _round(rw * pct / 100)), max(1, _round(rh * pct / 100))
    else:
        m = _SIZE_WH.fullmatch(spec)
        if not m or (m.group(2) is None and m.group(3) is None):
            raise bad(f"size {text[:40]!r} is not max, w,, ,h, pct:n, w,h or !w,h")
        confined = m.group(1) == "!"
        w = int(m.group(2)) if m.group(2) is not None else None
        h = int(m.group(3)) if m.group(3) is not None else None
        if w == 0 or h == 0:
            raise bad(f"size {text!r} has a zero dimension")
        if confined:
            if w is None or h is None:
                raise bad(f"size {text!r}: !w,h needs both w and h")
            scale = min(w / rw, h / rh)
            if not upscale:
                scale = min(scale, 1.0)
            ow = min(w, max(1, _round(rw * scale)))
            oh = min(h, max(1, _round(rh * scale)))
            return _fit(ow, oh, limits, False)
        if w is None:
            assert h is not None
            ow, oh = max(1, _round(rw * h / rh)), h
        elif h is None:
            ow, oh = w, max(1, _round(rh * w / rw))
        else:
            ow, oh = w, h
        if not upscale and (ow > rw or oh > rh):
            raise bad(f"size {text!r} is larger than the {rw}x{rh} region; use ^{text}")
    if ow > limits.max_width or oh > limits.max_height or ow * oh > limits.max_area:
        raise too_large(f"size {ow}x{oh} exceeds the server's limits (maxArea "
                        f"{limits.max_area}, maxWidth {limits.max_width})")
    return ow, oh


def parse_rotation(text: str) -> tuple[bool, float]:
    """``n`` or ``!n`` (mirror first), 0 <= n <= 360 -> (mirror, degrees in [0, 360))."""
    m = _ROTATION.fullmatch(text)
    if not m:
        raise bad(f"rotation {text[:40]!r} is not n or !n (degrees 0..360)")
    degrees = float(m.group(2))
    if degrees > 360:
        raise bad(f"rotation {text!r} is over 360 degrees")
    degrees %= 360
    return m.group(1) == "!", int(degrees) if degrees.is_integer() else degrees


def parse_quality_format(text: str) -> tuple[str, str]:
    quality, dot, fmt = text.rpartition(".")
    if not dot:
        raise bad(f"{text[:40]!r} is not quality.format")
    if quality not in QUALITIES:
        raise bad(f"quality {quality[:40]!r} is not one of {', '.join(QUALITIES)}")
    if fmt not in FORMATS:
        raise bad(f"format {fmt[:16]!r} is not one of {', '.join(FORMATS)}")
    return quality, fmt


def _number(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.10f}".rstrip("0").rstrip(".")


def canonical_path(region: tuple[int, int, int, int], size: tuple[int, int],
                   dims: tuple[int, int], limits: Limits, mirror: bool, rotation: float,
                   quality: str, fmt: str) -> str:
    """``{region}/{size}/{rotation}/{quality}.{format}`` in the spec's canonical form."""
    x, y, w, h = region
    region_s = "full" if region == (0, 0, *dims) else f"{x},{y},{w},{h}"
    if size == _fit(w, h, limits, False):
        size_s = "max"
    elif size == _fit(w, h, limits, True):
        size_s = "^max"
    else:
        size_s = ("^" if size[0] > w or size[1] > h else "") + f"{size[0]},{size[1]}"
    rotation_s = ("!" if mirror else "") + _number(rotation)
    return f"{region_s}/{size_s}/{rotation_s}/{quality}.{fmt}"


def info_document(info: dict[str, Any], base: str, limits: Limits,
                  preferred: str = "jpg") -> dict[str, Any]:
    """The info.json for a slide's ``info`` reply."""
    width, height = (int(v) for v in info["level_dimensions"][0])
    tile = int(info["tile_size"])
    scale_factors = [1]
    while -(-width // scale_factors[-1]) > tile or -(-height // scale_factors[-1]) > tile:
        scale_factors.append(scale_factors[-1] * 2)
    sizes = sorted({(int(w), int(h)) for w, h in info["level_dimensions"]
                    if w * h <= limits.max_area and w <= limits.max_width
                    and h <= limits.max_height})
    return {
        "@context": CONTEXT,
        "id": base,
        "type": "ImageService3",
        "protocol": PROTOCOL,
        "profile": PROFILE,
        "width": width,
        "height": height,
        "maxWidth": limits.max_width,
        "maxHeight": limits.max_height,
        "maxArea": limits.max_area,
        "sizes": [{"width": w, "height": h} for w, h in sizes],
        "tiles": [{"width": tile, "height": tile, "scaleFactors": scale_factors}],
        "preferredFormats": [preferred],
        "extraQualities": EXTRA_QUALITIES,
        "extraFeatures": EXTRA_FEATURES,
    }


def wants_json_ld(accept: str | None) -> bool:
    """JSON-LD unless the client sent an Accept header that does not ask for it."""
    return accept is None or not accept.strip() or "application/ld+json" in accept


# --- handlers --------------------------------------------------------------------------


class _IIIFHandler(RelayHandler):
    def initialize(self, gateway: Gateway, dims: TTLCache) -> None:  # type: ignore[override]
        super().initialize(gateway)
        self.dims = dims

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Access-Control-Expose-Headers", "Link, X-Tilerouter-Level")

    def prepare(self) -> None:
        if self.request.method != "OPTIONS":  # CORS preflights carry no credentials
            super().prepare()

    def options(self, *args: str) -> None:
        self.set_header("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
        self.set_header("Access-Control-Allow-Headers", "Authorization, Accept")
        self.set_header("Access-Control-Max-Age", "86400")
        self.set_status(204)
        self.finish()

    @property
    def limits(self) -> Limits:
        return Limits(self.gateway.settings.iiif_max_area)

    def slide(self, identifier: str) -> str:
        try:
            return normalize_slide_path(identifier)
        except TileRouterError as exc:
            raise ApiError(exc) from None

    def base_uri(self, slide: str) -> str:
        return f"{self.request.protocol}://{self.request.host}/iiif/{quote(slide, safe='')}"

    async def fetch_info(self, slide: str) -> dict[str, Any]:
        info = (await self.relay({"op": "info", "slide": slide})).header
        self.dims[slide] = tuple(int(v) for v in info["level_dimensions"][0])
        return info

    async def dimensions(self, slide: str) -> tuple[int, int]:
        try:  # the dimensions cache must not bypass a token's path limits
            self.grant.check(slide)
        except TileRouterError as exc:
            raise ApiError(exc) from None
        dims = self.dims.get(slide)
        if dims is None:
            info = await self.fetch_info(slide)
            dims = tuple(int(v) for v in info["level_dimensions"][0])
        return dims


class BaseUriHandler(_IIIFHandler):
    def get(self, identifier: str) -> None:
        slide = self.slide(identifier.rstrip("/"))
        self.redirect(self.base_uri(slide) + "/info.json", status=303)

    head = get


class InfoJsonHandler(_IIIFHandler):
    async def get(self, identifier: str) -> None:
        slide = self.slide(identifier)
        info = await self.fetch_info(slide)
        fmt = "png" if self.gateway.settings.tile_format == "png" else "jpg"
        doc = info_document(info, self.base_uri(slide), self.limits, fmt)
        ld = wants_json_ld(self.request.headers.get("Accept"))
        self.set_header("Content-Type", LD_JSON if ld else "application/json")
        self.set_header("Link", PROFILE_LINK)
        self.set_header("Vary", "Accept")
        self.set_header("Cache-Control", "no-cache")
        self.finish(json.dumps(doc, indent=1))

    head = get


class ImageHandler(_IIIFHandler):
    async def get(self, identifier: str, region: str, size: str, rotation: str,
                  quality_format: str) -> None:
        slide = self.slide(identifier)
        quality, fmt = parse_quality_format(quality_format)
        mirror, degrees = parse_rotation(rotation)
        dims = await self.dimensions(slide)
        x, y, w, h = parse_region(region, *dims)
        limits = self.limits
        out_w, out_h = parse_size(size, w, h, limits)
        request = {"op": "region", "slide": slide, "x": x, "y": y, "w": w, "h": h,
                   "out_w": out_w, "out_h": out_h, "format": FORMATS[fmt],
                   "quality": quality, "rotation": degrees, "mirror": mirror}
        try:
            reply = await self.relay(request)
        except ApiError as err:  # the spec answers 400 for parameters the worker refused
            if err.error.code in ("too_large", "out_of_range"):
                err.status_code = 400
            raise
        canonical = canonical_path((x, y, w, h), (out_w, out_h), dims, limits, mirror,
                                   degrees, quality, fmt)
        self.set_header("Content-Type", reply.header.get("mime", "application/octet-stream"))
        self.set_header("Cache-Control", "public, max-age=3600")
        self.add_header("Link", PROFILE_LINK)
        self.add_header("Link", f'<{self.base_uri(slide)}/{canonical}>;rel="canonical"')
        if "level" in reply.header:
            self.set_header("X-Tilerouter-Level", str(reply.header["level"]))
        self.finish(payload_bytes(reply.payload))

    head = get


def routes(gateway: Gateway) -> list[tuple[Any, ...]]:
    """The IIIF routes for ``make_app`` (they share one short-lived dimensions cache)."""
    kwargs = {"gateway": gateway, "dims": TTLCache(maxsize=4096, ttl=DIMS_TTL)}
    return [
        (r"/iiif/(.+)/info\.json", InfoJsonHandler, kwargs),
        (r"/iiif/(.+)/([^/]+)/([^/]+)/([^/]+)/([^/]+\.[^/.]+)", ImageHandler, kwargs),
        (r"/iiif/(.+)", BaseUriHandler, kwargs),
    ]
