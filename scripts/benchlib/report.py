"""Markdown rendering of run summaries (one row per configuration)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

from .metrics import RunSummary

Column = tuple[str, Callable[[RunSummary], str]]


def fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{100.0 * value:.1f}%"


def fmt_num(value: float | None, digits: int = 1) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:.{digits}f}"


def fmt_cpu(row: RunSummary) -> str:
    cpu = row.cpu
    if cpu is None:
        return "n/a"
    parts = [cpu.server.get(name, 0.0) for name in ("gateway", "router", "workers")]
    return "/".join(f"{x:.2f}" for x in [*parts, cpu.bench, cpu.other])


def fmt_errors(errors: dict[str, int]) -> str:
    return " ".join(f"{code}:{n}" for code, n in errors.items()) or "0"


METRIC_COLUMNS: list[Column] = [
    ("tiles", lambda r: str(r.tiles)),
    ("tiles/s", lambda r: fmt_num(r.tiles_per_s)),
    ("p50 ms", lambda r: fmt_num(r.p50_ms)),
    ("p95 ms", lambda r: fmt_num(r.p95_ms)),
    ("p99 ms", lambda r: fmt_num(r.p99_ms)),
    ("max ms", lambda r: fmt_num(r.max_ms, 0)),
    ("errors", lambda r: fmt_errors(r.errors)),
    ("affinity hit", lambda r: fmt_ratio(r.affinity_ratio)),
    ("tile-cache hit", lambda r: fmt_ratio(r.cache_ratio)),
    ("decoded hit", lambda r: fmt_ratio(r.decoded_ratio)),
    ("gw saved", lambda r: fmt_ratio(r.gateway_ratio)),
    ("opens/1k tiles", lambda r: fmt_num(r.opens_per_1000, 2)),
    ("busy max/mean s", lambda r: f"{r.busy_max:.2f}/{r.busy_mean:.2f}"),
    ("idle-wait s", lambda r: fmt_num(r.idle_wait, 2)),
    ("unique tiles (MB)", lambda r: f"{r.unique_tiles} ({r.unique_mb:.1f})"),
    ("cores gw/router/workers/bench/other", fmt_cpu),
    ("wall s", lambda r: fmt_num(r.wall_s)),
]


def markdown_lines(header: Sequence[str], rows: Iterable[Sequence[str]],
                   right_from: int | None = None) -> list[str]:
    """A markdown table; columns from index ``right_from`` on are right-aligned."""
    align = ["--:" if right_from is not None and i >= right_from else "---"
             for i in range(len(header))]
    return ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|",
            *("| " + " | ".join(cells) + " |" for cells in rows)]


def markdown_table(rows: Sequence[RunSummary]) -> str:
    if not rows:
        return "(no runs)"
    label_keys = list(rows[0].label)
    header = label_keys + [name for name, _ in METRIC_COLUMNS]
    cells = ([row.label[k] for k in label_keys] + [fn(row) for _, fn in METRIC_COLUMNS]
             for row in rows)
    return "\n".join(markdown_lines(header, cells, right_from=len(label_keys)))
