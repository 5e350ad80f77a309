"""The soak's summary: per-client counts (nothing may be lost), latency, each fault's
recovery, RSS growth per component process, router stats, logs."""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .metrics import percentile
from .soak_clients import Client, Done
from .soak_faults import Fault, Sampler, fmt_since


@dataclass
class SoakRun:
    """What a finished run hands to the summary."""

    args: argparse.Namespace
    duration: float
    warmup: float
    t0: float  # load start (time.monotonic())
    clients: list[Client]
    schedule: list[tuple[float, str]]
    faults: list[Fault]
    sampler: Sampler
    drained: float  # seconds waited for outstanding replies after the load stopped
    hung_clients: list[int]
    end_rss_note: str
    final_stats: dict[str, Any]
    logdir: Path
    shutdown_notes: list[str] = field(default_factory=list)


def pct(values: list[float], p: float) -> float:
    return percentile(sorted(values), p)


def rss_table(sampler: Sampler, warmup: float) -> list[str]:
    lines = [f"{'role':9} {'pid':>7} {'seen s':>13} {'baseline@s':>10} {'base MiB':>9} "
             f"{'end MiB':>8} {'delta MiB':>9} {'2nd half MiB/min':>16} {'max MiB':>8}  note"]
    order = {"router": 0, "gateway": 1, "launcher": 2, "worker": 3}
    for pid in sorted(sampler.series, key=lambda p: (order.get(sampler.roles[p], 9),
                                                      sampler.series[p][0][0])):
        s = sampler.series[pid]
        first, last = s[0][0], s[-1][0]
        want = max(warmup, first + 10.0)
        base = next(((t, k) for t, k in s if t >= want), None)
        survived = last >= sampler.series_end - 3
        note = "survivor" if survived else "gone (killed/replaced)"
        if base is None or base[0] >= last:
            lines.append(f"{sampler.roles[pid]:9} {pid:>7} {first:5.0f}-{last:<6.0f} "
                         f"{'-':>10} {'-':>9} {s[-1][1] / 1024:8.1f} {'-':>9} {'-':>16} "
                         f"{max(k for _, k in s) / 1024:8.1f}  {note}, too short to compare")
            continue
        delta = (s[-1][1] - base[1]) / 1024
        # growth rate over the second half of the compared span: ~0 once caches are full
        mid = next((t, k) for t, k in s if t >= (base[0] + last) / 2)
        slope = ((s[-1][1] - mid[1]) / 1024 / ((last - mid[0]) / 60)
                 if last - mid[0] > 1 else float("nan"))
        lines.append(f"{sampler.roles[pid]:9} {pid:>7} {first:5.0f}-{last:<6.0f} {base[0]:10.0f} "
                     f"{base[1] / 1024:9.1f} {s[-1][1] / 1024:8.1f} {delta:+9.1f} {slope:+16.1f} "
                     f"{max(k for _, k in s) / 1024:8.1f}  {note}")
    return lines


def log_findings(logdir: Path) -> list[str]:
    out = []
    for log in sorted(logdir.glob("*.log")):
        text = log.read_text(errors="replace").splitlines()
        tb = sum("Traceback" in line for line in text)
        errs = [line for line in text if " ERROR " in line or " CRITICAL " in line]
        warns = [line for line in text if " WARNING " in line]
        out.append(f"  {log.name}: {len(text)} lines, {tb} tracebacks, {len(errs)} ERROR, "
                   f"{len(warns)} WARNING")
        for line in (errs[:5] if errs else []):
            out.append(f"      {line[:220]}")
    return out


def print_summary(run: SoakRun) -> None:
    done = _print_clients(run)
    _print_faults(run, done)
    _print_processes(run)


def _print_clients(run: SoakRun) -> list[Done]:
    """Totals per client and over all of them, latency; returns every answered request."""
    args, duration, clients = run.args, run.duration, run.clients
    drained, hung_clients = run.drained, run.hung_clients
    print("\n=========================== SOAK SUMMARY ===========================")
    print(f"duration {duration:.0f}s, {args.clients} clients x {args.inflight} in flight, "
          f"request_timeout {args.request_timeout}s, heartbeat 0.5s x 3, "
          f"gateway cache {args.gateway_cache_mib} MiB, tile cache {args.tile_cache_mib} MiB")
    print(f"after load stop: waited {drained:.1f}s for outstanding replies "
          f"(bound {args.request_timeout + 10:.0f}s)"
          + (f"; clients still running: {hung_clients}" if hung_clients else ""))
    print("\nper client:")
    print(f"{'client':>6} {'sent':>7} {'replies':>7} {'ok':>7} {'lost':>5} {'resent':>6} "
          f"{'reconn':>6} {'dup':>4} {'unk':>4} {'badimg':>6} {'overdue':>7}  errors")
    totals: Counter[str] = Counter()
    sent = replies = lost = 0
    lost_ids: list[tuple[int, int]] = []
    for c in clients:
        s = c.stats
        c_lost = s.sent - s.replies
        sent, replies, lost = sent + s.sent, replies + s.replies, lost + c_lost
        totals.update(s.outcomes)
        lost_ids += [(c.idx, rid) for rid in sorted(c.pending)]
        errs = {k: v for k, v in s.outcomes.items() if k != "ok"}
        print(f"{c.idx:>6} {s.sent:>7} {s.replies:>7} {s.outcomes['ok']:>7} {c_lost:>5} "
              f"{s.resent:>6} {s.reconnects:>6} {s.duplicates:>4} {s.unknown_ids:>4} "
              f"{s.bad_payloads:>6} {len(s.overdue):>7}  {errs or ''}")
    done = [d for c in clients for d in c.done.values()]
    ok_done = [d for d in done if d.ok]
    lat = [(d.at - d.first_sent) * 1000 for d in ok_done]
    lat_clean = [(d.at - d.first_sent) * 1000 for d in ok_done if not d.resent]
    lat_all = [(d.at - d.first_sent) * 1000 for d in done]
    print(f"\ntotal: {sent} requests, {replies} replies, {totals['ok']} ok, "
          f"errors {dict((k, v) for k, v in totals.most_common() if k != 'ok')}")
    print(f"LOST: {lost}" + (f"  (client, id): {lost_ids[:20]}" if lost_ids else "  (ok)"))
    dup = sum(c.stats.duplicates for c in clients)
    unk = sum(c.stats.unknown_ids for c in clients)
    bad = sum(c.stats.bad_payloads for c in clients)
    print(f"duplicate replies {dup}, unknown ids {unk}, bad image payloads {bad}, "
          f"re-sent after reconnect {sum(c.stats.resent for c in clients)}, "
          f"reconnects {sum(c.stats.reconnects for c in clients)}, "
          f"failed connect attempts {sum(c.stats.connect_failures for c in clients)}")
    print(f"tiles/s (ok) over the load: {totals['ok'] / duration:.1f}; "
          f"MB received {sum(c.stats.bytes for c in clients) / 1e6:.1f}")
    print(f"latency ms, ok replies (first send -> reply): p50 {pct(lat, 50):.1f}  "
          f"p90 {pct(lat, 90):.1f}  p99 {pct(lat, 99):.1f}  max {max(lat, default=0):.1f}")
    print(f"  ok, never re-sent: p50 {pct(lat_clean, 50):.1f}  p99 {pct(lat_clean, 99):.1f}; "
          f"all replies incl. errors: p99 {pct(lat_all, 99):.1f}  "
          f"max {max(lat_all, default=0):.1f}")
    return done


def _print_faults(run: SoakRun, done: list[Done]) -> None:
    duration, t0, faults, schedule = run.duration, run.t0, run.faults, run.schedule
    print("\nfaults (t = seconds since load start; recovery from the fault):")
    print("  detected: victim gone from router stats; stats: system whole again in stats;")
    print("  probe: first OK uncacheable region request (fresh connection) sent after the fault;")
    print("  cl max/med: per client, first OK tile reply to a request sent after the fault")
    print(f"{'t':>7} {'fault':13} {'detail':26} {'detected':>8} {'stats':>7} {'probe':>7} "
          f"{'cl max':>7} {'cl med':>7}  client errors until next fault / notes")
    for i, f in enumerate(faults):
        nxt = faults[i + 1].at if i + 1 < len(faults) else duration + 1e9
        errs = Counter(d.code for d in done if not d.ok
                       and f.at <= d.at - t0 < nxt)
        rec = [c for c in f.clients if c is not None]
        missing = len(f.clients) - len(rec)
        cl_max = f"{max(rec):.2f}s" if rec else "never"
        cl_med = f"{statistics.median(rec):.2f}s" if rec else "-"
        det = "-" if f.stats_detected is None else f"{f.stats_detected - f.at:.2f}s"
        notes = [*f.notes]
        if f.probe_failures:
            notes.append(f"probe failures {f.probe_failures}")
        messages = Counter(f"{d.code}: {d.message}" for d in done if not d.ok
                           and f.at <= d.at - t0 < nxt)
        if messages:
            notes.append("messages " + ", ".join(f"{m!r} x{n}" for m, n in
                                                  messages.most_common(4)))
        if missing:
            notes.append(f"{missing} client(s) never got an OK tile again within 60 s")
        print(f"{f.at:7.2f} {f.kind:13} {f.detail:26} {det:>8} "
              f"{fmt_since(f.stats_recovered, f.at):>7} {fmt_since(f.probe, f.at):>7} "
              f"{cl_max:>7} {cl_med:>7}  "
              f"{dict(errs) or '{}'}; {'; '.join(notes)}")
    injected = {k for _, k in schedule}
    if len(faults) < len(schedule):
        print(f"  only {len(faults)} of {len(schedule)} scheduled faults ran ({injected})")


def _print_processes(run: SoakRun) -> None:
    """RSS per component process, final router stats, overdue requests, disconnects, logs."""
    clients, sampler, warmup, final_stats = run.clients, run.sampler, run.warmup, run.final_stats
    end_rss_note, logdir, shutdown_notes = run.end_rss_note, run.logdir, run.shutdown_notes
    print(f"\nRSS (VmRSS; baseline = first sample at/after max(warm-up {warmup:.0f}s, "
          f"first seen + 10 s); {end_rss_note}):")
    for line in rss_table(sampler, warmup):
        print("  " + line)

    print("\nrouter stats at the end (counters since the last router restart):")
    routing = final_stats.get("routing", final_stats)
    print("  " + json.dumps(routing)[:900])
    if "gateway" in final_stats:
        print("  gateway: " + json.dumps(final_stats["gateway"])[:900])
    print("\noverdue requests (no reply within request_timeout + 10 s while running):")
    od = [(c.idx, t, rid) for c in clients for t, rid in c.stats.overdue]
    print("  none" if not od else "  " + ", ".join(f"c{i}#{r}@{t:.0f}s" for i, t, r in od[:30]))
    print("\ndisconnects per client (t, why):")
    for c in clients:
        if c.stats.disconnects:
            print(f"  client {c.idx}: " + "; ".join(f"{t:.1f}s {why}"
                                                    for t, why in c.stats.disconnects[:5]))
    print(f"\ncomponent logs and rss.csv (every sample) copied to {logdir}:")
    for line in log_findings(logdir):
        print(line)
    if shutdown_notes:
        print("shutdown: " + "; ".join(shutdown_notes))
    else:
        print("shutdown: every component exited 0 on SIGTERM, no worker left behind")
