"""bench_dicomweb.py's trace mode: cache-aware vs round-robin routing with the slides in a
PACS, on bench_remote.py's many-slide viewer trace.

N demo slides are converted to DICOM WSI (wsidicomizer, ``dicom_slides``; kept in a
folder named by their parameters and reused), uploaded to one Orthanc, and reached
through one latency proxy per RTT (``store_host`` proxies, a round trip per new
connection too). Each row is bench_remote's ``run_trace_row``: a fresh server with
``--store pacs=dicomweb+http://PROXY/dicom-web``, the same seeded Zipf pan/zoom trace
(two viewers per slide), a reader cache below the slide count and a small per-worker
frame cache, so a worker that does not hold a slide pays for it again (QIDO + metadata
round trips to open it, WADO-RS round trips for its frames). Nothing here asserts timing.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from config.settings import load_settings

from .dicom_slides import level_file, make_dicom_slide, series_uids
from .orthanc import OrthancServer
from .procs import run_jobs
from .remote_measure import Target, TraceRow, TraceSetup, run_trace_row
from .report import fmt_errors, fmt_num, fmt_ratio, markdown_lines
from .server import ServerError
from .slides import SlideSet, slide_geometry
from .store_host import Child, ChildError
from .trace import TraceSpec

log = logging.getLogger(__name__)

STORE = "pacs"  # the store's name: slide ids are pacs/<study>/<series>


@dataclass(frozen=True)
class DicomSet:
    """The converted slides: one folder of .dcm files per slide, and their slide ids."""

    root: Path
    folders: tuple[Path, ...]
    ids: tuple[str, ...]  # pacs/<StudyInstanceUID>/<SeriesInstanceUID>, most popular first
    convert_s: float  # spent converting in this run (0 when all were reused)

    def files(self) -> list[Path]:
        return sorted(p for f in self.folders for p in f.glob("*.dcm"))

    def nbytes(self) -> int:
        return sum(p.stat().st_size for p in self.files())


def _convert(job: tuple[str, int, int, int]) -> float:
    """One slide into ``folder.part``, renamed to ``folder`` once whole (so an
    interrupted run never leaves a half slide that looks done)."""
    folder, width, height, seed = job
    started = time.monotonic()
    part = Path(folder + ".part")
    shutil.rmtree(part, ignore_errors=True)
    make_dicom_slide(part, width=width, height=height, seed=seed,
                     accession=f"ACC-{seed:04d}", description=f"trace slide {seed}")
    part.rename(folder)
    return time.monotonic() - started


def ensure_dicom_slides(cache_dir: str, count: int, width: int, height: int, seed: int,
                        procs: int = 2) -> DicomSet:
    root = Path(cache_dir) / f"{width}x{height}-seed{seed}-n{count}"
    root.mkdir(parents=True, exist_ok=True)
    folders = tuple(root / f"s{i:02d}" for i in range(count))
    todo = [(str(f), width, height, seed + i) for i, f in enumerate(folders)
            if not f.is_dir()]
    started = time.monotonic()
    if todo:
        log.info("converting %d slide(s) of %dx%d to DICOM in %s (%d at a time)",
                 len(todo), width, height, root, procs)
        run_jobs(_convert, todo, procs)
    ids = tuple(f"{STORE}/{'/'.join(series_uids(sorted(f.glob('*.dcm'))))}"
                for f in folders)
    return DicomSet(root, folders, ids, time.monotonic() - started if todo else 0.0)


class PacsUnderProxy:
    """One Orthanc holding the slides, behind one latency proxy per RTT (``with``)."""

    def __init__(self, slides: DicomSet, rtts_ms: Sequence[float], log_dir: str) -> None:
        self.slides = slides
        self.rtts_ms = tuple(rtts_ms)
        self.log_dir = log_dir
        self.upload_s = 0.0
        self.instances = 0
        self.ports: dict[str, int] = {}
        self._proxies: Child | None = None
        self._stack = ExitStack()

    def __enter__(self) -> PacsUnderProxy:
        try:
            pacs = self._stack.enter_context(OrthancServer())
            started = time.monotonic()
            self.instances = pacs.upload(self.slides.files())
            self.upload_s = time.monotonic() - started
            self._proxies = Child(["proxies", f"127.0.0.1:{pacs.port}",
                                   *(f"{r:g}" for r in self.rtts_ms)],
                                  os.path.join(self.log_dir, "proxies-pacs.log"))
            self._stack.callback(self._proxies.stop)
            self.ports = {k: int(v) for k, v in self._proxies.ready["ports"].items()}
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stack.close()

    def target(self, rtt_ms: float) -> Target:
        url = f"dicomweb+http://127.0.0.1:{self.ports[f'{rtt_ms:g}']}/dicom-web"
        return Target("dicomweb", rtt_ms, str(self.slides.root), (("store", f"{STORE}={url}"),),
                      self._connections(rtt_ms))

    def _connections(self, rtt_ms: float) -> Callable[[], int]:
        proxies = self._proxies
        assert proxies is not None
        return lambda: int(proxies.ask("stats")[f"{rtt_ms:g}"]["connections"])


COLUMNS = ["RTT ms", "policy", "workers", "tiles/s", "p50 ms", "p99 ms", "errors",
           "opens/1k tiles", "affinity hit", "frames fetched/tile", "round trips/1k tiles",
           "store wait", "new conns", "CA/RR tiles/s"]

LEGEND = (
    "tiles/s, p50, p99: tiles answered OK per second and client-side latency of every "
    "request; opens: the workers' reader_opens per 1000 tiles (each open of a PACS slide "
    "is a QIDO search plus wsidicom's metadata requests); affinity hit: requests the "
    "router sent to a worker already holding the slide; frames fetched: frames the "
    "workers asked Orthanc for by WADO-RS (frame-cache misses) per tile answered; round "
    "trips: the workers' DICOMweb calls; store wait: remote_seconds / (workers x row "
    "seconds), above 100% when a worker's calls overlap; new conns: TCP connections the "
    "latency proxy accepted; CA/RR: cache-aware tiles/s over round-robin's at the same RTT")


def table(rows: Sequence[TraceRow]) -> str:
    by_key = {(r.target.rtt_ms, r.workers, r.policy): r for r in rows}
    cells = []
    for r in rows:
        s, m = r.summary, r.remote
        rr = by_key.get((r.target.rtt_ms, r.workers, "round-robin"))
        ratio = (f"{s.tiles_per_s / rr.summary.tiles_per_s:.2f}x"
                 if r.policy == "cache-aware" and rr and rr.summary.tiles_per_s else "")
        elapsed = s.extra["elapsed_s"]
        cells.append([
            f"{r.target.rtt_ms:g}", r.policy, str(r.workers), fmt_num(s.tiles_per_s),
            fmt_num(s.p50_ms), fmt_num(s.p99_ms), fmt_errors(s.errors),
            fmt_num(s.opens_per_1000, 1), fmt_ratio(s.affinity_ratio),
            fmt_num(m.frames_fetched / s.tiles, 2) if s.tiles else "n/a",
            fmt_num(1000.0 * m.round_trips / s.tiles, 0) if s.tiles else "n/a",
            fmt_ratio(m.remote_seconds / (r.workers * elapsed)) if elapsed else "n/a",
            "-" if r.proxy_connections is None else str(r.proxy_connections), ratio])
    return "\n".join(markdown_lines(COLUMNS, cells, right_from=3))


def run(args: argparse.Namespace, log_dir: str) -> tuple[str, bool]:
    """Convert (or reuse), upload, run every RTT x policy row; the report as markdown,
    and whether every row ran without a failure or an error."""
    started = time.monotonic()
    slides = ensure_dicom_slides(args.slides_dir, args.slides, args.width, args.height,
                                 args.seed)
    settings = load_settings({})
    geometries = {sid: slide_geometry(str(level_file(sorted(f.glob("*.dcm")))), settings)
                  for sid, f in zip(slides.ids, slides.folders, strict=True)}
    frame_cache = ("dicomweb_frame_cache_bytes", str(int(args.frame_cache_mb * 2 ** 20)))
    setup = TraceSetup(
        slides=SlideSet(str(slides.root), slides.ids), geometries=geometries,
        trace=TraceSpec(seed=args.seed), viewers=args.viewers, inflight=args.inflight,
        duration=args.duration, transport="ws", reader_cache_size=args.reader_cache_size,
        tile_cache_bytes=args.tile_cache_bytes, log_dir=log_dir, extra=(frame_cache,))
    rows: list[TraceRow] = []
    failed: list[str] = []
    with PacsUnderProxy(slides, args.rtts, log_dir) as pacs:
        setup_s = time.monotonic() - started
        log.info("setup %.0f s (converting %.0f s, upload of %d instances %.1f s)",
                 setup_s, slides.convert_s, pacs.instances, pacs.upload_s)
        for rtt in args.rtts:
            for policy in args.policies:
                log.info("trace: %g ms RTT, %s, %d workers", rtt, policy, args.workers)
                try:
                    row = run_trace_row(setup, pacs.target(rtt), policy, args.workers)
                except (ServerError, ChildError, OSError, RuntimeError) as exc:
                    failed.append(f"{rtt:g} ms {policy}: {str(exc).splitlines()[0]}")
                    log.error("%s", failed[-1])
                    continue
                rows.append(row)
                s = row.summary
                log.info("  %.0f tiles/s p50 %.1f ms p99 %.1f ms errors %s",
                         s.tiles_per_s, s.p50_ms, s.p99_ms, s.errors or 0)
        instances, upload_s = pacs.instances, pacs.upload_s
    others = [r.other_cores for r in rows if r.other_cores is not None]
    out = [
        "\n## PACS: cache-aware vs round-robin on the many-slide trace\n",
        f"- machine: {os.cpu_count()} CPUs, python {sys.version.split()[0]}; other "
        f"programs used {sum(others) / len(others) if others else float('nan'):.2f} cores "
        "on average during the rows (from /proc); whole run "
        f"{time.monotonic() - started:.0f} s, setup {setup_s:.0f} s (DICOM conversion "
        f"{slides.convert_s:.0f} s{' (reused)' if not slides.convert_s else ''}, upload "
        f"of {instances} instances, {slides.nbytes() / 1e6:.0f} MB, {upload_s:.1f} s)",
        f"- slides: {args.slides} x {args.width}x{args.height} demo slides as DICOM WSI "
        "(baseline JPEG q90 frames of 256 px, label, overview, thumbnail) in one Orthanc "
        "(DICOMweb plugin, no auth) behind a TCP proxy adding "
        f"{', '.join(f'{r:g}' for r in args.rtts)} ms RTT (plus one RTT per new "
        "connection); all on 127.0.0.1",
        f"- trace: {args.viewers} viewers x {args.inflight} in flight over ws, seed "
        f"{args.seed}, Zipf slide popularity, {args.duration:g} s per row; "
        f"{args.workers} workers, reader cache {args.reader_cache_size} slides/worker, "
        f"frame cache {args.frame_cache_mb:g} MiB/worker, tile cache "
        f"{args.tile_cache_bytes / 1e6:g} MB/worker, gateway hot-tile cache off, prefetch "
        "on, DeepZoom 254/1; every other setting default",
        f"\nColumns: {LEGEND}.\n", table(rows)]
    if failed:
        out += ["\n### Failed\n", *(f"- {f}" for f in failed)]
    return "\n".join(out), not failed and not any(r.summary.errors for r in rows)
