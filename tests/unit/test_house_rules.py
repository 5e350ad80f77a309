"""House rules a linter does not check: module size, private access by name, layers of
the scripts (import-linter checks the five packages; ruff's SLF001 checks ``x._y``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("config", "readers", "router", "workers", "wsgateway")
MAX_LINES = 400


def _sources(*suffixes: str) -> list[Path]:
    found = []
    for top in (*PACKAGES, "scripts"):
        found += [p for p in (ROOT / top).rglob("*") if p.suffix in suffixes]
    return sorted(found)


@pytest.mark.parametrize("path", _sources(".py", ".js"), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_over_400_lines(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_LINES, "split it: one job per module"


def test_no_private_attribute_reached_by_name() -> None:
    """``getattr(obj, "_x")`` hides from ruff what ``obj._x`` would show."""
    pattern = re.compile(r"""getattr\([^,]+,\s*["']_[a-z]""")
    hits = [f"{p.relative_to(ROOT)}:{n}" for p in _sources(".py")
            for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []


def test_scripts_never_import_tests() -> None:
    pattern = re.compile(r"^\s*(from|import)\s+tests\b", re.M)
    hits = [str(p.relative_to(ROOT)) for p in (ROOT / "scripts").rglob("*.py")
            if pattern.search(p.read_text())]
    assert hits == []
