"""Unit-test fixtures: one small slide tree generated once per session (real TIFFs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from readers.demo_slide import write_demo_slide

WIDTH, HEIGHT = 1500, 1000


@pytest.fixture(scope="session")
def unit_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Slide root with a good slide, a nested one, two corrupt files and an escaping link.

    root/a.tiff             1500x1000 demo slide (mpp 0.25)
    root/sub/b.tiff         600x400 demo slide
    root/notaslide.tiff     text
    root/truncated.tiff     first 3000 bytes of a.tiff
    root/escape.tiff        symlink to ../outside.tiff (a readable slide outside the root)
    """
    base = tmp_path_factory.mktemp("unit-slides")
    root = base / "root"
    (root / "sub").mkdir(parents=True)
    a = Path(write_demo_slide(root / "a.tiff", WIDTH, HEIGHT, tile=256, seed=1))
    write_demo_slide(root / "sub" / "b.tiff", 600, 400, tile=256, seed=2)
    (root / "notaslide.tiff").write_text("this is not a TIFF file\n")
    (root / "truncated.tiff").write_bytes(a.read_bytes()[:3000])
    outside = base / "outside.tiff"
    outside.write_bytes(a.read_bytes())
    os.symlink(outside, root / "escape.tiff")
    return root


@pytest.fixture(scope="session")
def slide_a(unit_root: Path) -> str:
    return str(unit_root / "a.tiff")
