"""Seeded pan/zoom sessions: every configuration replays exactly the same requests.

Each virtual viewer has its own random stream (seeded by ``seed`` and the viewer's
number). A session picks a slide by Zipf popularity (or the hot slide), opens it at
the home view (the whole slide, as OpenSeadragon does), zooms in on a random spot and
then walks: pans of the 3x3..4x4 viewport, zoom in, zoom out. After ``switch_every``
steps the viewer switches to a new session. Every step asks for the tiles of its
viewport, row by row, that are not in the viewer's own tile cache: like a browser
viewer (OpenSeadragon keeps ``maxImageCacheCount`` = 200 tiles), it never re-asks for
a tile it still holds, so the repeats a server sees are other viewers' and old ones.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from .slides import Geometry

VIEWPORTS = (3, 4)  # viewport edge in tiles, drawn per session
PAN_STEPS = (-2, -1, 0, 1, 2)  # tiles moved per pan, per axis
P_ZOOM_IN = 0.2
P_ZOOM_OUT = 0.2
HOT_SHARE = 0.5
CLIENT_CACHE = 200  # OpenSeadragon's default maxImageCacheCount


class TileRequest(NamedTuple):
    slide: str
    level: int
    col: int
    row: int


@dataclass(frozen=True)
class TraceSpec:
    seed: int
    zipf_s: float = 1.1
    switch_every: int = 20
    hot: bool = False
    client_cache: int = CLIENT_CACHE  # tiles each viewer keeps (0 = asks for every tile)


@dataclass
class View:
    """A viewer's viewport: top-left tile (x, y), w x h tiles, at one level."""

    slide: str
    geometry: Geometry
    level: int
    x: float
    y: float
    w: int
    h: int

    def clamp(self) -> None:
        cols, rows = self.geometry.tiles[self.level]
        self.x = min(max(0.0, self.x), max(0, cols - self.w))
        self.y = min(max(0.0, self.y), max(0, rows - self.h))

    def tiles(self) -> list[TileRequest]:
        cols, rows = self.geometry.tiles[self.level]
        x0, y0 = int(self.x), int(self.y)
        return [TileRequest(self.slide, self.level, c, r)
                for r in range(y0, min(y0 + self.h, rows))
                for c in range(x0, min(x0 + self.w, cols))]

    def zoom(self, delta: int) -> None:
        """Change level by ``delta`` (+1 in, -1 out) keeping the view's centre."""
        factor = 2.0 ** delta
        cx, cy = (self.x + self.w / 2) * factor, (self.y + self.h / 2) * factor
        self.level += delta
        self.x, self.y = cx - self.w / 2, cy - self.h / 2
        self.clamp()

    def pan(self, dx: int, dy: int) -> None:
        self.x += dx
        self.y += dy
        self.clamp()


def zipf_weights(n: int, s: float) -> list[float]:
    """Popularity of rank 1..n: 1 / rank**s."""
    return [1.0 / (rank ** s) for rank in range(1, n + 1)]


def pick_slide(rng: random.Random, slides: Sequence[str], spec: TraceSpec) -> str:
    """Zipf over the slides; with ``hot``, half the sessions go to the first slide and the
    other half Zipf over the rest."""
    if spec.hot and len(slides) > 1:
        if rng.random() < HOT_SHARE:
            return slides[0]
        rest = slides[1:]
        return rng.choices(rest, zipf_weights(len(rest), spec.zipf_s))[0]
    return rng.choices(slides, zipf_weights(len(slides), spec.zipf_s))[0]


def open_view(rng: random.Random, slide: str, geometry: Geometry) -> list[View]:
    """A new session: the home view (whole slide), then zoom steps towards a random spot
    down to the middle zoom level; the last view is where the walk starts."""
    size = rng.choice(VIEWPORTS)
    low = geometry.overview_level(size)
    target = (low + geometry.max_level + 1) // 2
    fx, fy = rng.random(), rng.random()
    views = []
    for level in range(low, target + 1):
        cols, rows = geometry.tiles[level]
        view = View(slide, geometry, level, fx * cols - size / 2, fy * rows - size / 2,
                    size, size)
        view.clamp()
        views.append(view)
    return views


def walk_step(rng: random.Random, view: View) -> None:
    """One random step: zoom in, zoom out (within overview..full resolution) or pan."""
    low, high = view.geometry.overview_level(view.w), view.geometry.max_level
    roll = rng.random()
    if roll < P_ZOOM_IN and view.level < high:
        view.zoom(+1)
    elif roll < P_ZOOM_IN + P_ZOOM_OUT and view.level > low:
        view.zoom(-1)
    else:
        view.pan(rng.choice(PAN_STEPS), rng.choice(PAN_STEPS))


def viewer_trace(viewer: int, spec: TraceSpec, slides: Sequence[str],
                 geometries: Mapping[str, Geometry]) -> Iterator[TileRequest]:
    """The endless, deterministic request stream of one virtual viewer."""
    rng = random.Random(f"tilerouter-bench:{spec.seed}:{viewer}")
    held: OrderedDict[TileRequest, None] = OrderedDict()  # the viewer's own tile cache

    def fresh(tiles: list[TileRequest]) -> Iterator[TileRequest]:
        for tile in tiles:
            if tile in held:
                held.move_to_end(tile)
                continue
            yield tile
            if spec.client_cache > 0:
                held[tile] = None
                if len(held) > spec.client_cache:
                    held.popitem(last=False)

    while True:
        slide = pick_slide(rng, slides, spec)
        *zooming, view = open_view(rng, slide, geometries[slide])
        for step in zooming:
            yield from fresh(step.tiles())
        for _ in range(spec.switch_every):
            yield from fresh(view.tiles())
            walk_step(rng, view)
