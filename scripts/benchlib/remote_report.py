"""bench_remote.py's tables and goal lines, computed from the measured rows only."""

from __future__ import annotations

from collections.abc import Sequence

from .metrics import percentile
from .remote_measure import ProbeRow, TraceRow
from .remote_peer import PeerRow
from .report import fmt_errors, fmt_num, fmt_ratio, markdown_lines

GOAL_RATIO = 2.0  # cache-aware / round-robin tiles/s at the highest RTT
GOAL_FIRST_RTTS = 10  # first tile: at most this many round trips + render time
GOAL_WARM_SLACK_MS = 5.0  # warm tile: at most one round trip + this


def _per_k(value: float, tiles: int) -> str:
    return fmt_num(1000.0 * value / tiles, 1) if tiles else "n/a"


def _rtt(row_rtt: float | None) -> str:
    return "-" if row_rtt is None else f"{row_rtt:g}"


def _cores(server: float | None, bench: float | None, helpers: float | None,
           other: float | None) -> str:
    return "/".join("n/a" if x is None else f"{x:.2f}" for x in (server, bench, helpers, other))


TRACE_COLUMNS = ["store", "RTT ms", "policy", "workers", "tiles/s", "p50 ms", "p99 ms",
                 "errors", "opens/1k tiles", "round trips/1k tiles", "ranged GETs/1k tiles",
                 "MB fetched", "store wait", "new conns", "affinity hit",
                 "cores server/bench/stores/other"]

TRACE_LEGEND = (
    "tiles/s, p50, p99: tiles answered OK per second and client-side latency of every "
    "request; opens: workers' reader_opens per 1000 tiles; round trips: remote calls "
    "(a batch of concurrent ranged GETs counts once), ranged GETs and MB fetched: the "
    "workers' remote counters in /stats over the row; store wait: remote_seconds / "
    "(workers x row seconds), the share of worker time spent waiting on the store; new "
    "conns: TCP connections the latency proxy accepted (each paid one RTT of handshake); "
    "affinity hit: requests sent to a worker already holding the slide; cores: average "
    "CPU cores used by the tilerouter server, this load generator, the stores (moto, "
    "nginx, proxies) and other programs on the machine")


def trace_table(rows: Sequence[TraceRow]) -> str:
    cells = []
    for r in rows:
        s, m = r.summary, r.remote
        cpu = s.cpu
        cells.append([
            r.target.store, _rtt(r.target.rtt_ms), r.policy, str(r.workers),
            fmt_num(s.tiles_per_s), fmt_num(s.p50_ms), fmt_num(s.p99_ms),
            fmt_errors(s.errors), fmt_num(s.opens_per_1000, 1),
            _per_k(m.round_trips, s.tiles) if r.target.rtt_ms is not None else "-",
            _per_k(m.ranged_requests, s.tiles) if r.target.rtt_ms is not None else "-",
            fmt_num(m.ranged_bytes / 1e6, 1) if r.target.rtt_ms is not None else "-",
            fmt_ratio(m.remote_seconds / (r.workers * s.extra["elapsed_s"]))
            if r.target.rtt_ms is not None and s.extra["elapsed_s"] else "-",
            str(r.proxy_connections) if r.proxy_connections is not None else "-",
            fmt_ratio(s.affinity_ratio),
            _cores(cpu.server_total if cpu else None, cpu.bench if cpu else None,
                   r.helper_cores, r.other_cores),
        ])
    return "\n".join(markdown_lines(TRACE_COLUMNS, cells, right_from=4))


def _pair(rows: Sequence[TraceRow]) -> list[tuple[TraceRow, TraceRow]]:
    """(cache-aware, round-robin) rows of the same store, RTT and worker count."""
    by_key = {(r.target.label, r.workers, r.policy): r for r in rows}
    pairs = []
    for r in rows:
        if r.policy == "cache-aware":
            rr = by_key.get((r.target.label, r.workers, "round-robin"))
            if rr is not None:
                pairs.append((r, rr))
    return pairs


def ratio_table(rows: Sequence[TraceRow], goal_rtt: float | None) -> str:
    """cache-aware / round-robin per store, RTT and workers; the goal line per pair at
    ``goal_rtt``."""
    pairs = _pair(rows)
    if not pairs:
        return "(no cache-aware / round-robin pairs measured)"
    header = ["store", "RTT ms", "workers", "cache-aware tiles/s", "round-robin tiles/s",
              "ratio", "opens RR/CA", "round trips/tile RR/CA"]
    cells, goals = [], []
    for ca, rr in pairs:
        a, b = ca.summary, rr.summary
        ratio = a.tiles_per_s / b.tiles_per_s if b.tiles_per_s else None

        def per_tile(r: TraceRow) -> float | None:
            return r.remote.round_trips / r.summary.tiles if r.summary.tiles else None

        opens = (b.opens_per_1000 / a.opens_per_1000
                 if a.opens_per_1000 and b.opens_per_1000 is not None else None)
        ta, tb = per_tile(ca), per_tile(rr)
        trips = tb / ta if ta and tb is not None and ca.target.rtt_ms is not None else None
        cells.append([ca.target.store, _rtt(ca.target.rtt_ms), str(ca.workers),
                      fmt_num(a.tiles_per_s), fmt_num(b.tiles_per_s),
                      f"{ratio:.2f}x" if ratio else "n/a",
                      f"{opens:.1f}x" if opens else "n/a",
                      f"{trips:.2f}x" if trips else "-"])
        if goal_rtt is not None and ca.target.rtt_ms == goal_rtt:
            verdict = "met" if ratio is not None and ratio >= GOAL_RATIO else "NOT met"
            goals.append(f"- goal cache-aware >= {GOAL_RATIO:g}x round-robin tiles/s at "
                         f"{goal_rtt:g} ms RTT, {ca.target.store}, {ca.workers} workers: "
                         f"{'n/a' if ratio is None else f'{ratio:.2f}x'} -> {verdict}")
    return "\n".join([*markdown_lines(header, cells, right_from=3), "", *goals])


def _p(values: list[float], q: float) -> float | None:
    return percentile(sorted(values), q) if values else None


def local_reference(probes: Sequence[ProbeRow]) -> ProbeRow | None:
    return next((p for p in probes if p.target.rtt_ms is None), None)


PROBE_LEGEND = (
    "one worker keeping every slide open, prefetch and gateway cache off; requests one at "
    "a time over one keep-alive HTTP connection after two warm-up slides were opened "
    "(connection pools as in a running server); /stats read after each request gives its "
    "round trips. first tile: the centre tile of the viewer's first (whole-slide) view of "
    "a slide never opened before (open + tile); warm tile: full-resolution tiles at "
    "spread-out spots of those slides, now open; 'fetched' = the warm tiles that needed a "
    "round trip (the others' bytes had come with an earlier read: directory read-ahead, "
    "merged ranges); render = the same requests on the local-disk store; store wait: "
    "the workers' remote_seconds per tile")


def _trips(trips: list[int]) -> str:
    if not trips:
        return "-"
    return f"{percentile(sorted(trips), 50):g} ({max(trips)})"


def first_tile_table(probes: Sequence[ProbeRow], peers: Sequence[PeerRow] = ()) -> str:
    local = local_reference(probes)
    render = _p(local.first_ms, 50) if local else None
    header = ["server", "store", "RTT ms", "slides", "p50 ms", "p99 ms", "errors",
              "round trips p50 (max)", "ranged GETs/tile", "KB fetched/tile",
              "store wait ms/tile", f"goal p50 <= {GOAL_FIRST_RTTS} RTT + render", "verdict"]
    cells, goals = [], []
    bytes_by_rtt = {p.rtt_ms: p.probe_bytes for p in peers}
    for p in [*probes, *(p.probe for p in peers if p.probe is not None)]:
        n = len(p.first_ms) or 1
        m, rtt = p.first_remote, p.target.rtt_ms
        remote = m is not None and rtt is not None
        p50 = _p(p.first_ms, 50)
        bound = (GOAL_FIRST_RTTS * rtt + render) if rtt is not None and render else None
        verdict = "-" if bound is None or p50 is None or p.target.store == "s3fs" else (
            "met" if p50 <= bound else "NOT met")
        kb = (m.ranged_bytes / n / 1e3 if remote and m else
              bytes_by_rtt.get(rtt or 0.0, 0) / n / 1e3 if p.target.store == "s3fs" else None)
        cells.append([p.server, p.target.store, _rtt(rtt), str(len(p.first_ms)),
                      fmt_num(p50), fmt_num(_p(p.first_ms, 99)), fmt_errors(dict(p.errors)),
                      _trips(p.first_trips) if remote else "-",
                      fmt_num(m.ranged_requests / n, 1) if remote and m else "-",
                      fmt_num(kb, 0), fmt_num(1000.0 * m.remote_seconds / n, 1)
                      if remote and m else "-", fmt_num(bound), verdict])
        if verdict != "-" and rtt and p.first_trips and p50 is not None and bound:
            trips = percentile(sorted(p.first_trips), 50)
            goals.append(f"- goal first tile p50 <= {GOAL_FIRST_RTTS} x {rtt:g} ms + render "
                         f"{render:.1f} ms = {bound:.1f} ms, {p.target.store}: "
                         f"{p50:.1f} ms -> {verdict}; round trips per first tile p50 "
                         f"{trips:g}, max {max(p.first_trips)} (goal {GOAL_FIRST_RTTS})")
    note = (f"render (local disk, first tile incl. open) p50 {render:.1f} ms"
            if render else "no local reference measured")
    return "\n".join([*markdown_lines(header, cells, right_from=2), "", f"- {note}",
                      *goals])


def warm_tile_table(probes: Sequence[ProbeRow], peers: Sequence[PeerRow] = ()) -> str:
    local = local_reference(probes)
    render = _p(local.warm_ms, 50) if local else None
    header = ["server", "store", "RTT ms", "tiles", "p50 ms", "p99 ms", "fetched",
              "fetched p50 ms", "fetched p99 ms", "KB fetched/fetched tile",
              "store wait ms/fetched tile",
              f"goal fetched p50 <= RTT + {GOAL_WARM_SLACK_MS:g} ms", "verdict",
              "fetched p50 - RTT - render ms"]
    cells, goals = [], []
    for p in [*probes, *(p.probe for p in peers if p.probe is not None)]:
        m, rtt = p.warm_remote, p.target.rtt_ms
        remote = m is not None and rtt is not None and p.server == "tilerouter"
        fetched = p.warm_fetched_ms() if remote else []
        f50 = _p(fetched, 50)
        bound = rtt + GOAL_WARM_SLACK_MS if remote and rtt is not None else None
        verdict = "-" if bound is None or f50 is None else (
            "met" if f50 <= bound else "NOT met")
        extra = (f50 - (rtt or 0.0) - render) if f50 is not None and render else None
        cells.append([p.server, p.target.store, _rtt(rtt), str(len(p.warm_ms)),
                      fmt_num(_p(p.warm_ms, 50)), fmt_num(_p(p.warm_ms, 99)),
                      str(len(fetched)) if remote else "-", fmt_num(f50),
                      fmt_num(_p(fetched, 99)),
                      fmt_num(m.ranged_bytes / len(fetched) / 1e3, 0)
                      if remote and m and fetched else "-",
                      fmt_num(1000.0 * m.remote_seconds / len(fetched))
                      if remote and m and fetched else "-",
                      fmt_num(bound), verdict, fmt_num(extra) if remote else "-"])
        if verdict != "-" and rtt and f50 is not None:
            goals.append(f"- goal warm tile (fetched) p50 <= {rtt:g} + {GOAL_WARM_SLACK_MS:g}"
                         f" ms, {p.target.store}: {f50:.1f} ms -> {verdict}")
    note = (f"render (local disk, same tiles) p50 {render:.1f} ms" if render
            else "no local reference measured")
    return "\n".join([*markdown_lines(header, cells, right_from=2), "", f"- {note}",
                      *goals])


PEER_COLUMNS = ["server", "store", "RTT ms", "tiles/s", "p50 ms", "p99 ms", "errors",
                "first tile p50 ms", "first tile p99 ms", "warm tile p50 ms", "new conns",
                "cores server/stores"]


def peer_table(peers: Sequence[PeerRow], http_rows: Sequence[TraceRow],
               probes: Sequence[ProbeRow]) -> str:
    """The peer per RTT next to tilerouter on the same trace over HTTP and S3."""
    probe_by = {(p.target.store, p.target.rtt_ms): p for p in probes}
    cells, lines = [], []
    for peer in peers:
        ours = next((r for r in http_rows if r.target.rtt_ms == peer.rtt_ms), None)
        if ours is not None:
            s, pr = ours.summary, probe_by.get(("s3", peer.rtt_ms))
            cells.append([f"tilerouter ({ours.policy}, {ours.workers} workers)", "s3",
                          f"{peer.rtt_ms:g}", fmt_num(s.tiles_per_s), fmt_num(s.p50_ms),
                          fmt_num(s.p99_ms), fmt_errors(s.errors),
                          fmt_num(_p(pr.first_ms, 50)) if pr else "n/a",
                          fmt_num(_p(pr.first_ms, 99)) if pr else "n/a",
                          fmt_num(_p(pr.warm_ms, 50)) if pr else "n/a",
                          str(ours.proxy_connections),
                          f"{fmt_num(s.cpu.server_total if s.cpu else None, 2)}/"
                          f"{fmt_num(ours.helper_cores, 2)}"])
        if peer.error or peer.summary is None:
            cells.append(["OpenSlide DeepZoom server", "s3fs", f"{peer.rtt_ms:g}",
                          *(["failed"] + ["-"] * 8)])
            lines.append(f"- peer at {peer.rtt_ms:g} ms failed: {peer.error}")
            continue
        s, pr = peer.summary, peer.probe
        cells.append(["OpenSlide DeepZoom server", "s3fs", f"{peer.rtt_ms:g}",
                      fmt_num(s.tiles_per_s), fmt_num(s.p50_ms), fmt_num(s.p99_ms),
                      fmt_errors(s.errors),
                      fmt_num(_p(pr.first_ms, 50)) if pr else "n/a",
                      fmt_num(_p(pr.first_ms, 99)) if pr else "n/a",
                      fmt_num(_p(pr.warm_ms, 50)) if pr else "n/a",
                      str(peer.trace_connections),
                      f"{fmt_num(peer.server_cores, 2)}/{fmt_num(peer.helper_cores, 2)}"])
        if ours is not None and s.tiles_per_s:
            lines.append(f"- {peer.rtt_ms:g} ms: tilerouter / peer tiles/s "
                         f"{ours.summary.tiles_per_s / s.tiles_per_s:.2f}x")
    return "\n".join([*markdown_lines(PEER_COLUMNS, cells, right_from=3), "", *lines])
