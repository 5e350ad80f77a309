"""Synthetic tissue-like pyramidal TIFFs that OpenSlide opens (demo and tests).

Levels are successive IFDs with ``subfiletype=1`` and ``metadata=None`` (SubIFDs
or a second ImageDescription make OpenSlide misread the file); tiles are JPEG.
Content is blobs of pink "tissue" with purple "nuclei" on a white background, so
tiles compress like real H&E tiles (background small, tissue large).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import numpy as np
import tifffile
from PIL import Image

log = logging.getLogger(__name__)

_LOWRES = 32  # level-0 pixels per cell of the coarse tissue map
_TEX = 512  # texture tile edge (level-0 pixels)


def _smooth(a: np.ndarray, passes: int, k: int) -> np.ndarray:
    for _ in range(passes):
        for axis in (0, 1):
            c = np.cumsum(np.pad(a, [(k, k) if i == axis else (0, 0) for i in range(2)],
                                 mode="edge"), axis=axis)
            a = (np.take(c, range(2 * k, c.shape[axis]), axis=axis)
                 - np.take(c, range(0, c.shape[axis] - 2 * k), axis=axis)) / (2 * k)
    return a


def _tissue_map(
    width: int, height: int, rng: np.random.Generator
) -> tuple[Image.Image, Image.Image]:
    """Coarse maps (one cell per _LOWRES px): RGB colour and tissue weight (L, 0..255)."""
    h, w = 2 * height // _LOWRES + 2, 2 * width // _LOWRES + 2  # room for edge strips
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    field = np.zeros((h, w), np.float32)
    for _ in range(rng.integers(4, 8)):
        cy, cx = rng.uniform(0.1, 0.4) * h, rng.uniform(0.1, 0.4) * w
        ry, rx = rng.uniform(0.05, 0.15) * h, rng.uniform(0.05, 0.15) * w
        field += np.exp(-(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2))
    noise = _smooth(rng.standard_normal((h, w)).astype(np.float32), 2, 3)
    field = field + 0.6 * noise / (np.abs(noise).max() + 1e-6)
    tissue = np.clip((field - 0.5) * 4, 0, 1)
    stain = _smooth(rng.random((h, w)).astype(np.float32), 2, 4)[..., None]
    pink = np.array([232, 150, 190], np.float32)
    purple = np.array([170, 110, 185], np.float32)
    colour = pink + (purple - pink) * np.clip((stain - stain.mean()) * 6 + 0.5, 0, 1)
    white = np.array([243, 242, 245], np.float32)
    rgb = white + (colour - white) * tissue[..., None]
    return (Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB"),
            Image.fromarray((tissue * 255).astype(np.uint8), "L"))


def _texture(rng: np.random.Generator) -> np.ndarray:
    """Fine structure (level-0 px) as an RGB delta: grain plus dark purple nuclei."""
    grain = rng.standard_normal((_TEX, _TEX)).astype(np.float32) * 0.08
    nuclei = np.zeros((_TEX + 16, _TEX + 16), np.float32)
    yy, xx = np.mgrid[-8:8, -8:8]
    for _ in range(900):
        cy, cx, r = rng.integers(0, _TEX), rng.integers(0, _TEX), rng.uniform(2.5, 6)
        nuclei[cy:cy + 16, cx:cx + 16] += 0.9 * np.exp(-(yy**2 + xx**2) / (r * r))
    nuclei[:, :16] += nuclei[:, _TEX:]  # wrap the margins so the texture tiles seamlessly
    nuclei[:16, :] += nuclei[_TEX:, :]
    amount = np.clip(np.roll(nuclei[:_TEX, :_TEX], (8, 8), (0, 1)), 0, 1)[..., None]
    typical = np.array([215, 140, 190], np.float32)
    ink = np.array([70, 30, 110], np.float32)
    return typical * 0.15 * grain[..., None] + (ink - typical) * amount


def _tiles(maps: tuple[Image.Image, Image.Image], tex: np.ndarray, width: int, height: int,
           down: int, tile: int) -> Iterator[np.ndarray]:
    """Tiles of one level, row by row, computed a strip of tiles at a time."""
    rgb_map, tissue_map = maps
    lw, lh = -(-width // down), -(-height // down)
    cols = -(-lw // tile)
    sw = cols * tile
    scale = _LOWRES / down  # level pixels per map cell
    step = tile * down % _TEX
    for ty in range(0, lh, tile):
        box = (0.0, ty / scale, sw / scale, (ty + tile) / scale)
        base = np.asarray(rgb_map.resize((sw, tile), Image.BILINEAR, box=box), np.float32)
        weight = np.asarray(tissue_map.resize((sw, tile), Image.BILINEAR, box=box), np.float32)
        ys = (np.arange(ty, ty + tile) * down) % _TEX
        for c in range(cols):
            x0 = c * tile
            w = weight[:, x0:x0 + tile]
            out = base[:, x0:x0 + tile]
            if w.max() > 0:
                xs = (np.arange(x0, x0 + tile) * down) % _TEX if step else _xs(down, tile)
                out = out + tex[ys[:, None], xs[None, :]] * (w[..., None] / 255)
            if ty + tile > lh or x0 + tile > lw:
                out = out.copy()
                out[lh - ty:] = 255
                out[:, lw - x0:] = 255
            yield np.clip(out, 0, 255).astype(np.uint8)


def _xs(down: int, tile: int) -> np.ndarray:
    return (np.arange(tile) * down) % _TEX


def write_demo_slide(
    path: str | os.PathLike[str],
    width: int = 20000,
    height: int = 15000,
    tile: int = 256,
    seed: int = 0,
    quality: int = 85,
    mpp: float = 0.25,
    aperio: bool = False,
) -> str:
    """Write a tiled JPEG pyramidal TIFF (levels down to <= 2 tiles wide); return its path.

    ``aperio=True`` writes the Aperio SVS layout instead (Aperio ImageDescription with
    MPP and AppMag, a stripped thumbnail after level 0, then the levels, then label and
    macro images), so OpenSlide reports vendor ``aperio`` with associated images.
    """
    rng = np.random.default_rng(seed)
    maps, tex = _tissue_map(width, height, rng), _texture(rng)
    res = 10000.0 / mpp  # pixels per centimetre -> openslide.mpp-x (generic TIFF)
    path = os.fspath(path)
    tmp = path + ".part"
    with tifffile.TiffWriter(tmp, bigtiff=True) as tif:
        down = 1
        while True:
            lw, lh = -(-width // down), -(-height // down)
            if aperio:
                desc = (f"Aperio Image Library vDEMO\r\n{width}x{height} ({tile}x{tile}) "
                        f"JPEG/RGB Q={quality}|AppMag = 40|MPP = {mpp}") if down == 1 else \
                    f"Aperio Image Library vDEMO\r\n{lw}x{lh} ({tile}x{tile}) -> {lw}x{lh}"
            else:
                desc = f"tilerouter demo slide {width}x{height} seed={seed}" if down == 1 \
                    else None
            tif.write(
                _tiles(maps, tex, width, height, down, tile),
                shape=(lh, lw, 3), dtype=np.uint8, tile=(tile, tile),
                compression="jpeg", compressionargs={"level": quality},
                photometric="rgb", subfiletype=1 if down > 1 and not aperio else 0,
                metadata=None, resolution=(res / down, res / down),
                resolutionunit="CENTIMETER", description=desc,
            )
            if aperio and down == 1:
                thumb = _visible(maps[0], width, height).resize(
                    (max(1, width // 32), max(1, height // 32)))
                tif.write(np.asarray(thumb), photometric="rgb", compression="jpeg",
                          metadata=None, subfiletype=0,
                          description=f"Aperio Image Library vDEMO\r\n{width}x{height} -> "
                                      f"{thumb.width}x{thumb.height}")
            if max(lw, lh) <= 2 * tile:
                break
            down *= 2
        if aperio:
            for name, image in (("label", _label_image(seed)),
                                ("macro", _macro_image(_visible(maps[0], width, height)))):
                tif.write(image, photometric="rgb", compression="lzw", metadata=None,
                          subfiletype=1 if name == "label" else 9,
                          description=f"Aperio Image Library vDEMO\r\n{name} "
                                      f"{image.shape[1]}x{image.shape[0]}")
    os.replace(tmp, path)
    log.info("wrote demo slide %s (%dx%d)", path, width, height)
    return path


def _visible(colour_map: Image.Image, width: int, height: int) -> Image.Image:
    """The part of the coarse map that covers the image (the map has room for edges)."""
    return colour_map.crop((0, 0, max(1, width // _LOWRES), max(1, height // _LOWRES)))


def _label_image(seed: int) -> np.ndarray:
    """A slide label: white card, a coloured stripe and bar-code-like marks."""
    from PIL import ImageDraw

    img = Image.new("RGB", (420, 400), (250, 250, 246))
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, 420, 60), fill=(60, 110, 190))
    rng = np.random.default_rng(seed)
    x = 40
    while x < 380:
        w = int(rng.integers(2, 7))
        draw.rectangle((x, 110, x + w, 230), fill=(20, 20, 20))
        x += w + int(rng.integers(2, 6))
    draw.text((40, 260), f"TILEROUTER DEMO  #{seed:04d}", fill=(20, 20, 20))
    draw.text((40, 300), "H&E  40x  synthetic", fill=(20, 20, 20))
    return np.asarray(img)


def _macro_image(colour_map: Image.Image) -> np.ndarray:
    """The whole glass slide at low power: the tissue on a pale slide with a label end."""
    glass = Image.new("RGB", (1280, 430), (236, 238, 240))
    scale = min(880 / colour_map.width, 400 / colour_map.height)
    tissue = colour_map.resize((max(1, round(colour_map.width * scale)),
                                max(1, round(colour_map.height * scale))), Image.BILINEAR)
    glass.paste(tissue, (360 + (880 - tissue.width) // 2, (430 - tissue.height) // 2))
    glass.paste(Image.fromarray(_label_image(0)).resize((320, 300)), (20, 65))
    return np.asarray(glass)
