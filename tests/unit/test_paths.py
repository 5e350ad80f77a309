"""Slide identifiers: syntax checks, symlink confinement to the root, and listing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from config.errors import Forbidden, SlideNotFound
from readers.local_store import list_slides, resolve_slide_path
from readers.slide_ids import normalize_slide_path


@pytest.mark.parametrize(
    "rel",
    ["/etc/passwd", "/a.tiff", "C:/slides/a.tiff", "c:a.tiff", "..", "../a.tiff", "a/../../b",
     "a/..", "./x", "a/./b", ".", "a//b", "a/", "", "a\\b", "..\\a.tiff", "a\x00.tiff",
     "a\nb.tiff", "a\tb", "\x1f", "\r"],
)
def test_normalize_rejects_escapes_and_odd_syntax(rel: str) -> None:
    """Anything that could leave the root, or be read two ways, is refused before any I/O."""
    with pytest.raises(Forbidden) as info:
        normalize_slide_path(rel)
    assert info.value.code == "forbidden"


@pytest.mark.parametrize("rel", ["a.tiff", "a/b.tiff", "deep/er/c.svs", "..a/b..tiff",
                                 "a b/ü.tiff", ".hidden/x.tiff", "ab:c.tiff"])
def test_normalize_accepts_plain_relative_paths(rel: str) -> None:
    assert normalize_slide_path(rel) == rel


@pytest.mark.parametrize("rel", ["a\x7f.tiff", "a\x85b.tiff"])
def test_normalize_rejects_del_and_c1_controls(rel: str) -> None:
    with pytest.raises(Forbidden):
        normalize_slide_path(rel)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/ with real files and symlinks in and out; secrets live next to the root."""
    root = tmp_path / "root"
    (root / "dir").mkdir(parents=True)
    (root / "dir" / "a.tiff").write_bytes(b"A" * 10)
    secret = tmp_path / "secret.tiff"
    secret.write_bytes(b"S" * 20)
    (tmp_path / "outdir").mkdir()
    (tmp_path / "outdir" / "x.tiff").write_bytes(b"X")
    os.symlink(secret, root / "link-out.tiff")
    os.symlink(tmp_path / "outdir", root / "escdir")
    os.symlink(root / "dir" / "a.tiff", root / "link-in.tiff")
    os.symlink("../secret.tiff", root / "rel-out.tiff")
    return root


@pytest.mark.parametrize("rel", ["link-out.tiff", "rel-out.tiff", "escdir/x.tiff",
                                 "../secret.tiff"])
def test_resolve_refuses_links_leaving_the_root(tree: Path, rel: str) -> None:
    """A syntactically clean name must still not reach a file outside via a symlink."""
    with pytest.raises(Forbidden):
        resolve_slide_path(str(tree), rel)


def test_resolve_follows_links_inside_the_root(tree: Path) -> None:
    real = os.path.realpath(tree / "dir" / "a.tiff")
    assert resolve_slide_path(str(tree), "link-in.tiff") == real
    assert resolve_slide_path(str(tree), "dir/a.tiff") == real


def test_resolve_through_a_symlinked_root(tree: Path, tmp_path: Path) -> None:
    """The root itself may be a symlink: containment is checked on real paths."""
    alias = tmp_path / "alias"
    os.symlink(tree, alias)
    assert resolve_slide_path(str(alias), "dir/a.tiff") == os.path.realpath(
        tree / "dir" / "a.tiff")
    with pytest.raises(Forbidden):
        resolve_slide_path(str(alias), "link-out.tiff")


@pytest.mark.parametrize("rel", ["missing.tiff", "dir/missing.tiff", "dir", "nodir/a.tiff"])
def test_resolve_missing_is_not_found(tree: Path, rel: str) -> None:
    with pytest.raises(SlideNotFound) as info:
        resolve_slide_path(str(tree), rel)
    assert info.value.code == "not_found"


@pytest.fixture
def listing_tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    for rel, size in [("b.tiff", 3), ("a.svs", 1), ("UPPER.TIFF", 2), ("notes.txt", 1),
                      ("a.tiff.part", 1), (".hidden.tiff", 1), (".cache/h.tiff", 1),
                      ("sub/c.ndpi", 5), ("sub/deeper/d.tif", 4), ("sub/readme.md", 1)]:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "o.tiff").write_bytes(b"o")
    os.symlink(outside / "o.tiff", root / "escape.tiff")
    os.symlink(outside, root / "escdir")
    os.symlink(root / "sub" / "c.ndpi", root / "alias.ndpi")
    return root


def test_list_slides(listing_tree: Path) -> None:
    """Nested slides listed with sizes; hidden, non-slide and escaping entries skipped."""
    found = list_slides(str(listing_tree))
    by_path = {s["path"]: s for s in found}
    assert set(by_path) == {"a.svs", "b.tiff", "UPPER.TIFF", "alias.ndpi", "sub/c.ndpi",
                            "sub/deeper/d.tif"}
    assert len(found) == len(by_path)
    assert by_path["sub/deeper/d.tif"] == {"path": "sub/deeper/d.tif", "name": "d.tif",
                                           "size": 4}
    assert by_path["alias.ndpi"]["size"] == 5  # size of the link's target
    # every listed path must be accepted by resolve_slide_path (what a client asks next)
    for path in by_path:
        resolve_slide_path(str(listing_tree), path)


def test_list_slides_is_deterministic_per_directory(listing_tree: Path) -> None:
    """Within one directory names come out sorted, so the listing is stable."""
    paths = [s["path"] for s in list_slides(str(listing_tree))]
    top = [p for p in paths if "/" not in p]
    assert top == sorted(top)
    assert paths == [s["path"] for s in list_slides(str(listing_tree))]


def test_list_slides_is_sorted_by_path(tmp_path: Path) -> None:
    for rel in ("z.tiff", "a/x.tiff"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    paths = [s["path"] for s in list_slides(str(tmp_path))]
    assert paths == sorted(paths)


def test_list_slides_of_a_missing_root_is_empty(tmp_path: Path) -> None:
    assert list_slides(str(tmp_path / "nope")) == []
