"""The gateway's stored-tile reader: built off the loop, bounded, never fatal."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from config.settings import Settings
from readers.demo_slide import write_demo_slide
from wsgateway.stored_tiles import StoredTiles


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stored")
    for name in ("a.tiff", "b.tiff"):
        write_demo_slide(root / name, 1100, 800, seed=len(name))
    (root / "bad.tiff").write_bytes(b"II*\0 not really a tiff")
    return root


def _tile(slide: str, col: int = 1, row: int = 1, **extra: object) -> dict[str, object]:
    return {"op": "tile", "slide": slide, "level": 11, "col": col, "row": row, **extra}


async def _serve(stored: StoredTiles, request: dict[str, object]) -> bytes | None:
    """Ask until the reader is open (bounded), as repeated client requests would."""
    for _ in range(500):
        if stored.status(str(request["slide"])) in ("open", "failed"):
            return stored.tile(request)
        stored.tile(request)  # starts the build the first time
        await asyncio.sleep(0.01)  # lets the executor's done-callback run
    raise AssertionError("reader never opened")


def test_reads_stored_tiles_once_indexed_and_evicts_with_close(root: Path) -> None:
    stored = StoredTiles(Settings(slides=str(root), tile_size=256, overlap=0,
                                  reader_cache_size=1))

    async def scenario() -> None:
        assert stored.tile(_tile("a.tiff")) is None  # first sight: relayed, index building
        data = await _serve(stored, _tile("a.tiff"))
        assert data is not None and data[:2] == b"\xff\xd8"
        assert stored.tile(_tile("a.tiff", format="png")) is None
        assert stored.tile(_tile("a.tiff", col=4)) is None  # an edge tile is rendered
        assert await _serve(stored, _tile("b.tiff")) is not None
        assert stored.status("a.tiff") is None  # evicted (and closed: the LRU closes readers)
        assert await _serve(stored, _tile("bad.tiff")) is None  # remembered as failed, apart
        assert stored.status("bad.tiff") == "failed"
        assert await _serve(stored, _tile("b.tiff")) is not None  # not evicted by failures
        assert await _serve(stored, _tile("../outside.tiff")) is None
        assert stored.tile(_tile("b.tiff", prefetch=True)) is None  # a prefetch wants no bytes
        stored.close()
        assert stored.tile(_tile("a.tiff")) is None

    asyncio.run(scenario())
    assert stored.hits >= 2


def test_off_unless_native_geometry_and_enabled(root: Path) -> None:
    assert not StoredTiles(Settings(slides=str(root))).enabled  # 254/1
    assert not StoredTiles(Settings(slides=str(root), tile_size=256, overlap=0,
                                    gateway_stored_tiles=False)).enabled
    assert not StoredTiles(Settings(slides=str(root), tile_size=256, overlap=0,
                                    passthrough=False)).enabled
