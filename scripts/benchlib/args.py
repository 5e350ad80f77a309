"""Command-line value parsers the benchmarks share."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from config.errors import ConfigError
from config.settings import load_settings

from .server import supported_setting


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def csv_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_workers(text: str) -> tuple[int, ...]:
    """``1,2,N`` -> worker counts; N is this machine's CPU count. Duplicates dropped."""
    cpus = os.cpu_count() or 1
    counts = [cpus if part.upper() == "N" else int(part) for part in csv_list(text)]
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"bad worker counts {text!r}")
    return tuple(dict.fromkeys(counts))


def parse_choices(text: str, allowed: Sequence[str], what: str) -> tuple[str, ...]:
    items = tuple(dict.fromkeys(csv_list(text)))
    bad = [x for x in items if x not in allowed]
    if bad or not items:
        raise argparse.ArgumentTypeError(f"{what} must be from {', '.join(allowed)}: {text!r}")
    return items


def parse_size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    return int(width), int(height)


def parse_settings(items: Sequence[str], parser: argparse.ArgumentParser
                   ) -> tuple[tuple[str, str], ...]:
    """``--set name=value`` pairs, checked against this checkout's settings."""
    pairs = []
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not supported_setting(name):
            parser.error(f"--set {item!r}: expected NAME=VALUE with a known setting name")
        pairs.append((name, value))
    try:
        load_settings(dict(pairs))  # a bad value fails here, naming the setting
    except ConfigError as exc:
        parser.error(f"--set: {exc}")
    return tuple(pairs)
