"""scripts/bench_peers.py's output: one markdown table with the target ratios, the
correctness findings, CPU by process, and what was run."""

from __future__ import annotations

from .peers_common import OWN_CORES_RAW, OWN_CORES_SERVER
from .peers_wrk import Result
from .report import fmt_num, markdown_lines


def find(results: list[Result], server: str, geometry: str, workload: str) -> Result | None:
    for r in results:
        if r.server == server and r.geometry == geometry and r.workload == workload:
            return r
    return None


RATIOS = (  # (label, numerator, denominator, target)
    ("tilerouter 254/1 distinct / OpenSlide DZ server 254/1 distinct",
     ("tilerouter", "254/1", "distinct"), ("OpenSlide DZ multiserver", "254/1", "distinct"),
     1.5),
    ("tilerouter 254/1 distinct / OpenSlide in-process render 254/1",
     ("tilerouter", "254/1", "distinct"), ("OpenSlide in-process", "254/1", "distinct"), 0.85),
    ("tilerouter 254/1 distinct, workers on their own cores / OpenSlide on those cores",
     (OWN_CORES_SERVER, "254/1", "distinct"), (OWN_CORES_RAW, "254/1", "distinct"), 0.85),
    ("tilerouter 256/0 passthrough distinct / IIPImage distinct",
     ("tilerouter", "256/0", "distinct"), ("IIPImage", "256/0", "distinct"), 2.0),
    ("tilerouter 256/0 repeated / IIPImage + memcached repeated",
     ("tilerouter", "256/0", "repeated"), ("IIPImage + memcached", "256/0", "repeated"), 1.0),
    ("tilerouter 256/0 repeated, websocket / over HTTP",
     ("tilerouter (websocket)", "256/0", "repeated"), ("tilerouter", "256/0", "repeated"),
     1.0),
)

HEADER = ("server", "geometry", "workload", "tiles/s", "p50 ms", "p99 ms",
          "CPU s / 1000 tiles", "server cores", "non-2xx", "socket errors", "notes")


def _row(r: Result) -> list[str]:
    return [r.server, r.geometry, r.workload, fmt_num(r.tiles_per_s, 0), fmt_num(r.p50_ms),
            fmt_num(r.p99_ms), fmt_num(r.cpu_per_1000, 2), fmt_num(r.cores, 2),
            fmt_num(r.non2xx, 0), fmt_num(r.sock_errors, 0), r.note]


def _ratio_line(results: list[Result], label: str, num: tuple[str, str, str],
                den: tuple[str, str, str], target: float) -> str:
    a, b = find(results, *num), find(results, *den)
    if a is None or b is None or not a.tiles_per_s or not b.tiles_per_s:
        value, verdict = "n/a", "not measured"
    else:
        ratio = a.tiles_per_s / b.tiles_per_s
        value = f"{ratio:.2f}x"
        verdict = "MET" if ratio >= target else "MISSED"
    return (f"| **ratio**: {label} | | | **{value}** | | | | | | | "
            f"target >= {target:g}x: {verdict} |")


def markdown(results: list[Result]) -> str:
    return "\n".join([*markdown_lines(HEADER, map(_row, results)),
                      *(_ratio_line(results, *ratio) for ratio in RATIOS)])


def print_report(table: str, checks: dict[str, list[str]], failures: dict[str, str],
                 results: list[Result], footer: str) -> None:
    print(table)
    print()
    print("Correctness (one interior full-resolution tile per server):")
    for name, found in checks.items():
        print(f"- {name}: " + "; ".join(found))
    for key, why in failures.items():
        print(f"- {key}: COULD NOT RUN: {why}")
    print()
    print("Server CPU by process (cores, averaged over the run):")
    for r in results:
        if r.cpu_by_process:
            print(f"- {r.server} {r.geometry} {r.workload}: {r.cpu_by_process}")
    print()
    print(footer)
