"""Settings whose value is a list written as text: router endpoints, stores, CPU lists."""

from __future__ import annotations

import re

STORE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def endpoint_list(value: str) -> list[str]:
    """The routers' endpoints in a ``frontend``/``backend`` setting (comma-separated)."""
    return [e.strip() for e in value.split(",") if e.strip()]


def store_entries(stores: str) -> list[str]:
    """The ``NAME=URL`` entries of the ``stores`` setting (comma-separated)."""
    return [e.strip() for e in stores.split(",") if e.strip()]


def parse_cpu_list(text: str) -> frozenset[int]:
    """``'0-2,5'`` -> {0, 1, 2, 5} (the kernel's cpuset list format); ValueError if bad."""
    cpus: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        first, dash, last = part.partition("-")
        lo, hi = int(first), int(last) if dash else int(first)
        if not 0 <= lo <= hi < 4096:
            raise ValueError(part)
        cpus.update(range(lo, hi + 1))
    return frozenset(cpus)


def parse_worker_range(text: str) -> tuple[int, int]:
    """``'1:4'`` -> (1, 4): the ``--workers MIN:MAX`` of an elastic pool (the launcher
    starts MIN and grows to MAX under load); ValueError if bad."""
    first, sep, last = text.partition(":")
    if not sep:
        raise ValueError(text)
    low, high = int(first), int(last)
    if not 1 <= low <= high:
        raise ValueError(text)
    return low, high
