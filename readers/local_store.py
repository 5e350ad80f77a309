"""Slides on a local (or locally mounted) file system: confinement and listing."""

from __future__ import annotations

import os

from config.errors import Forbidden, SlideNotFound
from readers.slide_ids import is_slide_name, normalize_slide_path

MAX_LISTED = 10000


def resolve_slide_path(root: str, rel: str) -> str:
    """Real filesystem path of ``rel`` under ``root`` after resolving symlinks."""
    rel = normalize_slide_path(rel)
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(real_root, *rel.split("/")))
    if os.path.commonpath([real_root, real]) != real_root:
        raise Forbidden(f"slide {rel!r} resolves outside the slide root")
    if not os.path.isfile(real):
        raise SlideNotFound(f"no slide {rel!r}")
    return real


def list_slides(root: str) -> list[dict[str, object]]:
    """Every file under ``root`` with a slide extension (sorted, hidden names skipped)."""
    real_root = os.path.realpath(root)
    found: list[dict[str, object]] = []
    for dirpath, dirnames, filenames in os.walk(real_root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not is_slide_name(name):
                continue
            full = os.path.join(dirpath, name)
            real = os.path.realpath(full)
            if os.path.commonpath([real_root, real]) != real_root or not os.path.isfile(real):
                continue
            rel = os.path.relpath(full, real_root).replace(os.sep, "/")
            found.append({"path": rel, "name": name, "size": os.path.getsize(real)})
            if len(found) >= MAX_LISTED:
                break
        if len(found) >= MAX_LISTED:
            break
    return sorted(found, key=lambda s: str(s["path"]))


class LocalStore:
    """A directory of slide files; ids are paths relative to it."""

    def __init__(self, root: str) -> None:
        self.root = root

    def local_copy(self, slide: str) -> tuple[str, str | None]:
        """The file to open for ``slide`` (Forbidden/SlideNotFound as
        ``resolve_slide_path``) and its version: None, a local file is always current."""
        return resolve_slide_path(self.root, slide), None

    def list(self) -> list[dict[str, object]]:
        return list_slides(self.root)
