"""Slide identifiers: validated before any file is opened, confined to the slide root."""

from __future__ import annotations

import os
import posixpath

from router.errors import Forbidden, SlideNotFound

SLIDE_EXTENSIONS = (
    ".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide",
    ".bif", ".dcm", ".czi", ".png", ".jpg", ".jpeg",
)
MAX_LISTED = 10000


def normalize_slide_path(rel: str) -> str:
    """Canonical relative POSIX path, or Forbidden for anything that could escape the root.

    Syntax only: absolute paths, ``..``, empty or ``.`` components, backslashes and
    control characters are refused. Symlinks are checked by ``resolve_slide_path``.
    """
    if any(ord(ch) < 32 or 127 <= ord(ch) < 160 for ch in rel) or "\\" in rel:
        raise Forbidden("slide path contains control characters or backslashes")
    if rel.startswith("/") or (len(rel) > 1 and rel[1] == ":"):
        raise Forbidden("slide path must be relative to the slide root")
    parts = rel.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise Forbidden("slide path must not contain '..', '.' or empty components")
    return posixpath.join(*parts)


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
            if name.startswith(".") or not name.lower().endswith(SLIDE_EXTENSIONS):
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
