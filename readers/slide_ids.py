"""Slide identifiers: the syntax every hop can check without touching a file.

An id is a relative POSIX path under a store's root. Checking its syntax needs no
I/O, so the gateway (the edge) refuses ids that could escape a root before a request
travels anywhere; the store that owns the bytes confines it again (symlinks, prefixes).
"""

from __future__ import annotations

import posixpath

from config.errors import Forbidden

MAX_SLIDE_ID = 1024
SLIDE_EXTENSIONS = (
    ".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide",
    ".bif", ".dcm", ".czi", ".png", ".jpg", ".jpeg",
)


def normalize_slide_path(rel: str) -> str:
    """Canonical relative POSIX path, or Forbidden for anything that could escape the root.

    Syntax only: absolute paths, ``..``, empty or ``.`` components, backslashes and
    control characters are refused. Symlinks are the store's job.
    """
    if any(ord(ch) < 32 or 127 <= ord(ch) < 160 for ch in rel) or "\\" in rel:
        raise Forbidden("slide path contains control characters or backslashes")
    if rel.startswith("/") or (len(rel) > 1 and rel[1] == ":"):
        raise Forbidden("slide path must be relative to the slide root")
    parts = rel.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise Forbidden("slide path must not contain '..', '.' or empty components")
    return posixpath.join(*parts)


def is_slide_name(name: str) -> bool:
    """A file name the slide listing shows (known extension, not hidden)."""
    return not name.startswith(".") and name.lower().endswith(SLIDE_EXTENSIONS)
