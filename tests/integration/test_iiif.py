"""IIIF Image API 3.0 over the real system: pixels equal to OpenSlide + Pillow computed
here, info.json per spec, spec error statuses, small outputs from low pyramid levels."""

from __future__ import annotations

import http.client
import io
import json
import math
from pathlib import Path

import numpy as np
import openslide
import pytest
from PIL import Image, ImageFilter

from config.errors import MessageTooLarge
from readers.base import RegionRequest
from readers.region import render_region
from tests.helpers import System
from wsgateway.iiif import Limits, canonical_path, parse_rotation, parse_size

W, H = 3000, 2200  # a.tiff
LD_JSON = 'application/ld+json;profile="http://iiif.io/api/image/3/context.json"'


def fetch(system: System, path: str, method: str = "GET",
          headers: dict[str, str] | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One request, redirects not followed."""
    conn = http.client.HTTPConnection("127.0.0.1", system.port, timeout=15)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def image(system: System, path: str) -> tuple[Image.Image, http.client.HTTPMessage]:
    status, headers, body = fetch(system, path)
    assert status == 200, (path, body[:300])
    return Image.open(io.BytesIO(body)), headers


def reference(path: Path, x: int, y: int, w: int, h: int, ow: int, oh: int) -> Image.Image:
    """Independent rendering: the pyramid level OpenSlide recommends for the downsample,
    the level pixels covering the region on white, one LANCZOS resize of the exact
    (fractional) rectangle."""
    slide = openslide.OpenSlide(str(path))
    level = best_level(slide, w / ow, h / oh)
    lds = slide.level_downsamples[level]
    lw, lh = slide.level_dimensions[level]
    x0, y0 = math.floor(x / lds), math.floor(y / lds)
    x1, y1 = min(math.ceil((x + w) / lds), lw), min(math.ceil((y + h) / lds), lh)
    rgba = slide.read_region((round(x0 * lds), round(y0 * lds)), level, (x1 - x0, y1 - y0))
    box = (x / lds - x0, y / lds - y0, (x + w) / lds - x0, (y + h) / lds - y0)
    return on_white(rgba).resize((ow, oh), Image.Resampling.LANCZOS, box=box)


def best_level(slide: openslide.OpenSlide, sx: float, sy: float) -> int:
    ds = min(sx, sy)
    return slide.get_best_level_for_downsample(ds) if ds > 1 else 0


def on_white(rgba: Image.Image) -> Image.Image:
    flat = Image.new("RGB", rgba.size, (255, 255, 255))
    flat.paste(rgba, mask=rgba)
    return flat


def whole_level(path: Path, level: int, x: int, y: int, w: int, h: int, ow: int, oh: int
                ) -> Image.Image:
    """Another path through the same level: read all of it, bicubic resize."""
    slide = openslide.OpenSlide(str(path))
    lds = slide.level_downsamples[level]
    rgba = slide.read_region((0, 0), level, slide.level_dimensions[level])
    box = (x / lds, y / lds, (x + w) / lds, (y + h) / lds)
    return on_white(rgba).resize((ow, oh), Image.Resampling.BICUBIC, box=box)


def from_level0(path: Path, x: int, y: int, w: int, h: int, ow: int, oh: int) -> Image.Image:
    """The naive path: full-resolution pixels, one resize."""
    slide = openslide.OpenSlide(str(path))
    return on_white(slide.read_region((x, y), 0, (w, h))).resize(
        (ow, oh), Image.Resampling.LANCZOS)


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img).astype(np.int16)


def blur(img: Image.Image) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(2))


def mad(a: Image.Image, b: Image.Image) -> float:
    assert a.size == b.size and a.mode == b.mode, (a.size, b.size, a.mode, b.mode)
    return float(np.abs(pixels(a) - pixels(b)).mean())


# --- every region and size form: exact PNG pixels -----------------------------------------

FORMS = [
    # identifier, region, size, level-0 rectangle, output size
    ("a.tiff", "full", "max", (0, 0, W, H), (W, H)),
    ("a.tiff", "square", "300,", (400, 0, 2200, 2200), (300, 300)),
    ("a.tiff", "1200,800,120,140", "max", (1200, 800, 120, 140), (120, 140)),
    ("a.tiff", "1000,2100,500,500", "max", (1000, 2100, 500, 100), (500, 100)),  # cropped
    ("a.tiff", "pct:41.6,7.5,40,70", "pct:25", (1248, 165, 1200, 1540), (300, 385)),
    ("a.tiff", "pct:0,0,100,100", "256,", (0, 0, W, H), (256, 188)),
    ("a.tiff", "full", ",100", (0, 0, W, H), (136, 100)),
    ("a.tiff", "full", "pct:10", (0, 0, W, H), (300, 220)),
    ("a.tiff", "full", "300,100", (0, 0, W, H), (300, 100)),  # distorted
    ("a.tiff", "full", "!300,300", (0, 0, W, H), (300, 220)),
    ("a.tiff", "full", "1500,1100", (0, 0, W, H), (1500, 1100)),  # a "sizes" entry
    ("a.tiff", "1001,777,333,222", "!100,100", (1001, 777, 333, 222), (100, 67)),
    ("a.tiff", "1100,900,100,100", "^150,", (1100, 900, 100, 100), (150, 150)),  # upscaled
    ("a.tiff", "1010,820,100,80", "^pct:150", (1010, 820, 100, 80), (150, 120)),
    ("a.tiff", "1010,820,100,80", "^!300,300", (1010, 820, 100, 80), (300, 240)),
    ("a.tiff", "1003,801,640,480", "!256,256", (1003, 801, 640, 480), (256, 192)),  # odd x,y
    ("sub%2Fb.tiff", "full", "!200,200", (0, 0, 2000, 1500), (200, 150)),
    ("sub/b.tiff", "500,400,700,300", "350,", (500, 400, 700, 300), (350, 150)),  # raw '/'
]


@pytest.mark.parametrize("ident,region,size,rect,out", FORMS)
def test_region_and_size_forms_exact_pixels(system: System, slide_root: Path, ident: str,
                                            region: str, size: str,
                                            rect: tuple[int, int, int, int],
                                            out: tuple[int, int]) -> None:
    got, headers = image(system, f"/iiif/{ident}/{region}/{size}/0/default.png")
    assert got.size == out and got.mode == "RGB"
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert headers["Content-Type"] == "image/png"
    path = slide_root / ident.replace("%2F", "/")
    expected = reference(path, *rect, *out)
    assert np.array_equal(pixels(got), pixels(expected)), mad(got, expected)
    level = int(headers["X-Tilerouter-Level"])
    assert level == best_level(openslide.OpenSlide(str(path)), rect[2] / out[0],
                               rect[3] / out[1])
    if level > 0:  # same level, other reading and resampling path: same geometry
        assert mad(got, whole_level(path, level, *rect, *out)) < 2
    if out[0] * out[1] <= 400_000:
        # same place and scale as the naive full-resolution rendering; blurred, because
        # the demo slide's lower levels are decimated (aliased), not averaged
        naive = from_level0(path, *rect, *out)
        assert mad(blur(got), blur(naive)) < 2


def test_jpeg_is_pillows_encoding_of_the_same_pixels(system: System, slide_root: Path) -> None:
    status, headers, body = fetch(system, "/iiif/a.tiff/full/256,/0/default.jpg")
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    expected = reference(slide_root / "a.tiff", 0, 0, W, H, 256, 188)
    buf = io.BytesIO()
    expected.save(buf, "jpeg", quality=75)
    assert body == buf.getvalue()
    assert mad(Image.open(io.BytesIO(body)).convert("RGB"), expected) < 5  # q75 on texture
    _, _, color = fetch(system, "/iiif/a.tiff/full/256,/0/color.jpg")
    assert color == body  # color is the default quality


# --- rotation, mirroring, quality -------------------------------------------------------

BASE = (1200, 800, 120, 140, 60, 70)  # region 1200,800,120,140 at size 60,


def _transposed(img: Image.Image, rotation: str) -> Image.Image:
    if rotation.startswith("!"):
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    steps = {"0": None, "90": Image.Transpose.ROTATE_270, "180": Image.Transpose.ROTATE_180,
             "270": Image.Transpose.ROTATE_90}[rotation.lstrip("!")]
    return img if steps is None else img.transpose(steps)


@pytest.mark.parametrize("rotation", ["90", "180", "270", "!0", "!90", "!270"])
def test_rotation_by_90s_and_mirroring(system: System, slide_root: Path, rotation: str) -> None:
    got, headers = image(system, f"/iiif/a.tiff/1200,800,120,140/60,/{rotation}/default.png")
    expected = _transposed(reference(slide_root / "a.tiff", *BASE), rotation)
    assert got.size == expected.size
    assert np.array_equal(pixels(got), pixels(expected))
    links = headers.get_all("Link")
    assert f'/iiif/a.tiff/1200,800,120,140/60,70/{rotation}/default.png>;rel="canonical"' in (
        " ".join(links))


def test_arbitrary_rotation(system: System, slide_root: Path) -> None:
    base = reference(slide_root / "a.tiff", *BASE)
    got, _ = image(system, "/iiif/a.tiff/1200,800,120,140/60,/22.5/default.png")
    expected = base.convert("RGBA").rotate(-22.5, Image.Resampling.BICUBIC, expand=True,
                                           fillcolor=(0, 0, 0, 0))
    assert got.mode == "RGBA" and got.size == expected.size
    assert np.array_equal(pixels(got), pixels(expected))
    assert got.getpixel((0, 0))[3] == 0  # transparent corner
    status, _, body = fetch(system, "/iiif/a.tiff/1200,800,120,140/60,/!337.5/default.jpg")
    expected = base.transpose(Image.Transpose.FLIP_LEFT_RIGHT).rotate(
        -337.5, Image.Resampling.BICUBIC, expand=True, fillcolor=(255, 255, 255))
    buf = io.BytesIO()
    expected.save(buf, "jpeg", quality=75)
    assert status == 200 and body == buf.getvalue()  # white corners in JPEG


@pytest.mark.parametrize("quality,mode", [("gray", "L"), ("bitonal", "1"), ("color", "RGB")])
def test_qualities(system: System, slide_root: Path, quality: str, mode: str) -> None:
    got, _ = image(system, f"/iiif/a.tiff/1200,800,120,140/60,/0/{quality}.png")
    base = reference(slide_root / "a.tiff", *BASE)
    expected = {"gray": lambda: base.convert("L"),
                "bitonal": lambda: base.convert("L").convert("1", dither=Image.Dither.NONE),
                "color": lambda: base}[quality]()
    assert got.mode == mode
    assert np.array_equal(pixels(got), pixels(expected))
    jpeg, _ = image(system, f"/iiif/a.tiff/1200,800,120,140/60,/0/{quality}.jpg")
    assert jpeg.mode == ("RGB" if quality == "color" else "L")


# --- pyramid level choice ---------------------------------------------------------------


@pytest.mark.parametrize("path,level", [
    ("/iiif/a.tiff/full/256,/0/default.jpg", 3),
    ("/iiif/a.tiff/full/1500,1100/0/default.jpg", 1),
    ("/iiif/a.tiff/full/!700,700/0/default.jpg", 2),
    ("/iiif/a.tiff/0,0,254,254/254,/0/default.jpg", 0),
    ("/iiif/sub%2Fb.tiff/full/max/0/default.jpg", 0),
])
def test_small_outputs_read_low_pyramid_levels(system: System, path: str, level: int) -> None:
    for _ in range(2):  # the second answer comes from the worker's cache: same level
        status, headers, _ = fetch(system, path)
        assert status == 200
        assert int(headers["X-Tilerouter-Level"]) == level


def test_region_requests_keep_slide_affinity(system: System) -> None:
    for i in range(8):
        status, _, _ = fetch(system, f"/iiif/sub%2Fb.tiff/{i * 100},0,200,200/100,/0/default.jpg")
        assert status == 200
    holders = [w for w in system.stats()["workers"] if "sub/b.tiff" in w["open_slides"]]
    assert len(holders) == 1


# --- info.json ----------------------------------------------------------------------------


def test_info_json(system: System, slide_root: Path) -> None:
    status, headers, body = fetch(system, "/iiif/a.tiff/info.json")
    assert status == 200
    assert headers["Content-Type"] == LD_JSON  # no Accept header: JSON-LD
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert headers["Link"] == '<http://iiif.io/api/image/3/level2.json>;rel="profile"'
    info = json.loads(body)
    assert next(iter(info)) == "@context"
    assert info["@context"] == "http://iiif.io/api/image/3/context.json"
    assert info["id"] == f"http://127.0.0.1:{system.port}/iiif/a.tiff"
    assert info["type"] == "ImageService3" and info["protocol"] == "http://iiif.io/api/image"
    assert info["profile"] == "level2"
    assert (info["width"], info["height"]) == (W, H)
    assert info["maxArea"] == 4096 * 4096
    assert info["tiles"] == [{"width": 254, "height": 254, "scaleFactors": [1, 2, 4, 8, 16]}]
    slide = openslide.OpenSlide(str(slide_root / "a.tiff"))
    assert info["sizes"] == [{"width": w, "height": h}
                             for w, h in sorted(slide.level_dimensions)]
    assert set(info["extraQualities"]) == {"color", "gray", "bitonal"}
    assert {"mirroring", "rotationArbitrary", "sizeUpscaling"} <= set(info["extraFeatures"])
    assert info["preferredFormats"] == ["jpg"]


def test_info_json_sizes_and_tiles_are_served(system: System) -> None:
    """Every advertised size, and the implementation notes' tiles at two scale factors."""
    info = json.loads(fetch(system, "/iiif/sub%2Fb.tiff/info.json")[2])
    assert info["id"].endswith("/iiif/sub%2Fb.tiff") and info["width"] == 2000
    for size in info["sizes"]:
        got, _ = image(system, f"/iiif/sub%2Fb.tiff/full/{size['width']},{size['height']}"
                               "/0/default.jpg")
        assert got.size == (size["width"], size["height"])
    tw = info["tiles"][0]["width"]
    for s in (1, info["tiles"][0]["scaleFactors"][-1]):
        for n, m in ((0, 0), ((2000 - 1) // (tw * s), (1500 - 1) // (tw * s))):
            xr, yr = n * tw * s, m * tw * s
            wr, hr = min(tw * s, 2000 - xr), min(tw * s, 1500 - yr)
            ws, hs = -(-wr // s), -(-hr // s)
            got, _ = image(system, f"/iiif/sub%2Fb.tiff/{xr},{yr},{wr},{hr}/{ws},{hs}"
                                   "/0/default.jpg")
            assert got.size == (ws, hs)


@pytest.mark.parametrize("accept,ctype", [
    ("application/ld+json", LD_JSON),
    ("application/json", "application/json"),
    ("*/*", "application/json"),
])
def test_info_json_content_negotiation(system: System, accept: str, ctype: str) -> None:
    status, headers, body = fetch(system, "/iiif/sub/b.tiff/info.json", headers={"Accept": accept})
    assert status == 200 and headers["Content-Type"] == ctype
    assert json.loads(body)["id"].endswith("/iiif/sub%2Fb.tiff")  # id always encoded


def test_base_uri_redirects_to_info_json(system: System) -> None:
    status, headers, _ = fetch(system, "/iiif/sub%2Fb.tiff")
    assert status == 303
    assert headers["Location"] == f"http://127.0.0.1:{system.port}/iiif/sub%2Fb.tiff/info.json"


def test_cors_preflight_and_head(system: System) -> None:
    status, headers, _ = fetch(system, "/iiif/a.tiff/full/64,/0/default.jpg", "OPTIONS",
                               {"Origin": "http://elsewhere.example",
                                "Access-Control-Request-Method": "GET"})
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert "GET" in headers["Access-Control-Allow-Methods"]
    status, headers, body = fetch(system, "/iiif/a.tiff/full/64,/0/default.jpg", "HEAD")
    assert status == 200 and body == b"" and headers["Content-Type"] == "image/jpeg"


def test_canonical_link_header(system: System) -> None:
    _, headers = image(system, "/iiif/a.tiff/pct:0,0,100,100/max/360/default.jpg")
    links = " ".join(headers.get_all("Link"))
    canonical = f"http://127.0.0.1:{system.port}/iiif/a.tiff/full/max/0/default.jpg"
    assert f'<{canonical}>;rel="canonical"' in links
    assert 'level2.json>;rel="profile"' in links
    _, headers = image(system, "/iiif/a.tiff/0,0,100,100/^pct:150/!90/gray.png")
    assert "/0,0,100,100/^150,150/!90/gray.png>" in " ".join(headers.get_all("Link"))


# --- errors -------------------------------------------------------------------------------

BAD = [
    # region
    "0,0,0,10/max/0/default.jpg", "3000,0,10,10/max/0/default.jpg",
    "0,2200,10,10/max/0/default.jpg", "abc/max/0/default.jpg", "1,2,3/max/0/default.jpg",
    "-1,0,10,10/max/0/default.jpg", "1.5,0,10,10/max/0/default.jpg",
    "pct:100,0,10,10/max/0/default.jpg", "pct:a,0,1,1/max/0/default.jpg",
    # size
    "full/0,/0/default.jpg", "full/,0/0/default.jpg", "full/3001,/0/default.jpg",
    "full/,2201/0/default.jpg", "full/3001,10/0/default.jpg", "full/pct:101/0/default.jpg",
    "full/pct:0/0/default.jpg", "full/!100,/0/default.jpg", "full/abc/0/default.jpg",
    "full/,/0/default.jpg", "full/^abc/0/default.jpg", "full/full/0/default.jpg",
    # rotation
    "full/64,/361/default.jpg", "full/64,/-90/default.jpg", "full/64,/45x/default.jpg",
    "full/64,/!!90/default.jpg",
    # quality and format
    "full/64,/0/sepia.jpg", "full/64,/0/native.jpg", "full/64,/0/default.gif",
    "full/64,/0/default.jpeg", "full/64,/0/default.tif",
]


@pytest.mark.parametrize("params", BAD)
def test_malformed_parameters_are_400(system: System, params: str) -> None:
    status, headers, body = fetch(system, f"/iiif/a.tiff/{params}")
    assert status == 400, body
    assert json.loads(body)["error"]["code"] == "bad_request"
    assert headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize("params", [
    "full/^10000,10000/0/default.jpg", "full/^pct:1000/0/default.jpg",
    "0,0,10,10/^65501,/0/default.jpg", "full/^65501,10/0/default.jpg",
])
def test_gigapixel_outputs_are_refused(system: System, params: str) -> None:
    status, _, body = fetch(system, f"/iiif/a.tiff/{params}")
    assert status == 400, body
    assert json.loads(body)["error"]["code"] == "too_large"


@pytest.mark.parametrize("path,status", [
    ("/iiif/missing.tiff/info.json", 404),
    ("/iiif/missing.tiff/full/max/0/default.jpg", 404),
    ("/iiif/sub%2Fmissing.tiff/full/max/0/default.jpg", 404),
    ("/iiif/..%2Foutside-secret.tiff/info.json", 403),
    ("/iiif/..%2Foutside-secret.tiff/full/max/0/default.jpg", 403),
    ("/iiif/sub%2F..%2F..%2Foutside-secret.tiff/info.json", 403),
    ("/iiif/%2Fetc%2Fpasswd/info.json", 403),
    ("/iiif/escape.tiff/full/64,/0/default.jpg", 403),
    ("/iiif/..%2Foutside-secret.tiff", 403),
    ("/iiif/notaslide.tiff/info.json", 422),
])
def test_identifier_errors(system: System, path: str, status: int) -> None:
    got, headers, body = fetch(system, path)
    assert got == status, body
    assert json.loads(body)["ok"] is False
    assert headers["Access-Control-Allow-Origin"] == "*"


# --- the pure parts, without the system -----------------------------------------------


def test_size_fitting_to_server_limits() -> None:
    limits = Limits(max_area=1_000_000)
    assert parse_size("max", W, H, limits) == (1167, 856)
    assert parse_size("^max", 100, 50, limits) == (1414, 707)
    assert parse_size("!2000,2000", W, H, limits) == (1167, 856)
    assert parse_size("max", 100, 50, limits) == (100, 50)
    assert canonical_path((0, 0, W, H), (1167, 856), (W, H), limits, False, 0, "default",
                          "jpg") == "full/max/0/default.jpg"
    assert parse_rotation("!360") == (True, 0)
    assert parse_rotation("22.50") == (False, 22.5)


def test_renderer_refuses_gigapixel_reads(slide_root: Path) -> None:
    """A small output whose region is barely reduced would read too much: refused."""
    slide = openslide.OpenSlide(str(slide_root / "a.tiff"))
    with pytest.raises(MessageTooLarge):
        render_region(slide, RegionRequest(0, 0, W, H, W, 1), max_area=65536)
    with pytest.raises(MessageTooLarge):
        render_region(slide, RegionRequest(0, 0, W, H, 300, 300), max_area=300 * 299)
    data, level, size = render_region(slide, RegionRequest(0, 0, W, H, 300, 220), 70000)
    assert level == 3 and size == (300, 220) and data[:2] == b"\xff\xd8"
