#!/usr/bin/env python3
"""Side-by-side peer benchmark: tilerouter vs OpenSlide's DeepZoom server vs IIPImage.

One run on 127.0.0.1, one server at a time, the same tiles for all of them:

* tilerouter (``tilerouter serve --workers 2``) at DeepZoom 254/1 and at 256/0 (stored-tile
  passthrough), gateway hot-tile cache on (the default);
* openslide-python 1.4.7's ``examples/deepzoom/deepzoom_multiserver.py``, run unmodified
  from the sdist (Flask's threaded development server) at 254/1 and 256/0, quality 75;
* IIPImage ``iipsrv.fcgi`` behind lighttpd + mod_fastcgi (2 iipsrv processes, quality 75),
  plain and with memcached; its DeepZoom is 256/0 only;
* OpenSlide itself in-process: 2 processes of ``DeepZoomGenerator.get_tile`` + Pillow JPEG
  q75 on the same distinct tiles (what the worker cores could render at best).
* "own-cores": the target's "what OpenSlide can render on the cores the workers use" taken
  literally: tilerouter 254/1 with its workers pinned to the upper half of the CPUs
  (``--worker-cpus``) and gateway, router and wrk on the lower half, against OpenSlide
  in-process pinned to the same upper half. The shared-core rows above stay as they are.
  tilerouter's workers cut most 254/1 tiles from stored JPEG tiles themselves
  (readers/stored_levels.py: the same bytes as get_tile, less CPU), so these ratios
  compare serving tiles with OpenSlide's own way of rendering them, and can exceed 1.

Workloads, driven by wrk (``scripts/peers/walk.lua`` walks a URL list): "distinct" = every
tile of the highest --levels levels of every slide, shuffled with a fixed seed, never
repeated within a run; "repeated" = --hot tiles requested over and over. The server's CPU
is summed over its whole process tree from /proc. Prints one markdown table (with the
target ratios) and a few correctness checks; everything raw goes to WORKDIR/run/.

Installs what is missing (Debian iipimage-server, lighttpd, memcached, wrk; Flask in a
venv under WORKDIR; the openslide-python sdist) and generates the slides once. Every
server runs in its own process group and is stopped on exit, error, Ctrl-C or SIGTERM.

On a shared 2-core machine other processes skew everything: before each run the script
waits (--quiet-wait) for the machine to go quiet, measures the CPU used by neither the
server nor wrk, and redoes a run (--attempts) that others disturbed; notes say so.

    .venv/bin/python scripts/bench_peers.py [--duration 10] [--only tilerouter,iip]
    .venv/bin/python scripts/bench_peers.py --only tilerouter --tilerouter-extra "--prefetch false"
    .venv/bin/python scripts/bench_peers.py --install-only
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib.metadata
import io
import itertools
import json
import multiprocessing as mp
import os
import random
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS_DIR = os.path.join(REPO, "scripts", "peers")
OPENSLIDE_SDIST = "openslide-python==1.4.7"
SDIST_DIR = "openslide_python-1.4.7"
MULTISERVER = os.path.join("examples", "deepzoom", "deepzoom_multiserver.py")
APT_PACKAGES = ("lighttpd", "memcached", "wrk", "iipimage-server")  # lighttpd before iip
QUALITY = 75
IIP_PROCS = 2
WORKERS = 2
# "the cores the workers use": workers pinned to their own CPUs against OpenSlide on those
OWN_CORES_SERVER = "tilerouter (workers on own cores)"
OWN_CORES_RAW = "OpenSlide in-process (the workers' cores)"
CLK_TCK = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
T0 = time.monotonic()


def say(msg: str) -> None:
    sys.stderr.write(f"[{time.monotonic() - T0:7.1f}s] {msg}\n")
    sys.stderr.flush()


class BenchError(RuntimeError):
    pass


# --- installing -------------------------------------------------------------------------

def _dpkg_installed(pkg: str) -> bool:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True,
                         text=True, check=False).stdout
    return out.strip() == "install ok installed"


def _apt_candidate(pkg: str) -> bool:
    out = subprocess.run(["apt-cache", "policy", pkg], capture_output=True, text=True,
                         check=False).stdout
    m = re.search(r"Candidate:\s*(\S+)", out)
    return bool(m) and m.group(1) != "(none)"


@contextlib.contextmanager
def _no_service_starts() -> Iterator[None]:
    """Debian maintainer scripts must not start lighttpd/memcached daemons of their own."""
    policy = "/usr/sbin/policy-rc.d"
    created = False
    if not os.path.exists(policy):
        with open(policy, "w") as fh:
            fh.write("#!/bin/sh\n# temporary, bench_peers.py: no daemon starts\nexit 101\n")
        os.chmod(policy, 0o755)
        created = True
    try:
        yield
    finally:
        if created:
            with contextlib.suppress(OSError):
                os.remove(policy)


def ensure_apt() -> None:
    missing = [p for p in APT_PACKAGES if not _dpkg_installed(p)]
    if not missing:
        say("apt: " + ", ".join(APT_PACKAGES) + " already installed")
        return
    if os.geteuid() != 0:
        raise BenchError(f"need root to apt-get install {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    updated = False
    if not all(_apt_candidate(p) for p in missing):
        say("apt-get update")
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
        updated = True
    # lighttpd first: iipimage-server depends on "libapache2-mod-fcgid | lighttpd"
    groups = [[p for p in missing if p != "iipimage-server"],
              [p for p in missing if p == "iipimage-server"]]
    with _no_service_starts():
        for group in filter(None, groups):
            say("apt-get install " + " ".join(group))
            cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *group]
            if subprocess.run(cmd, env=env, check=False).returncode != 0:
                if updated:
                    raise BenchError(f"apt-get install {' '.join(group)} failed")
                subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
                updated = True
                subprocess.run(cmd, env=env, check=True)


def iipsrv_path() -> str:
    out = subprocess.run(["dpkg", "-L", "iipimage-server"], capture_output=True, text=True,
                         check=True).stdout
    for line in out.splitlines():
        if line.endswith("/iipsrv.fcgi") and os.access(line, os.X_OK):
            return line
    raise BenchError("iipimage-server is installed but has no executable iipsrv.fcgi")


def ensure_multiserver(workdir: str) -> str:
    """The openslide-python sdist, unpacked; returns deepzoom_multiserver.py's path."""
    cache = os.path.join(workdir, "cache")
    os.makedirs(cache, exist_ok=True)
    script = os.path.join(cache, SDIST_DIR, MULTISERVER)
    if os.path.isfile(script):
        say(f"openslide-python sdist already unpacked ({script})")
        return script
    sdists = [f for f in os.listdir(cache) if f.startswith(SDIST_DIR) and f.endswith(".tar.gz")]
    if not sdists:
        say(f"pip download --no-deps --no-binary :all: {OPENSLIDE_SDIST}")
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        "--no-binary", ":all:", OPENSLIDE_SDIST, "-d", cache], check=True)
        sdists = [f for f in os.listdir(cache)
                  if f.startswith(SDIST_DIR) and f.endswith(".tar.gz")]
    if not sdists:
        raise BenchError(f"pip download of {OPENSLIDE_SDIST} left no sdist in {cache}")
    with tarfile.open(os.path.join(cache, sdists[0])) as tar:
        names = tar.getnames()
        if f"{SDIST_DIR}/{MULTISERVER}" not in names:
            raise BenchError(f"the {OPENSLIDE_SDIST} sdist has no {MULTISERVER} "
                             f"(examples: {[n for n in names if '/examples/' in n][:10]})")
        tar.extractall(cache, filter="data")
    return script


def ensure_flask_venv(workdir: str) -> str:
    """A venv with Flask and the project venv's own OpenSlide and Pillow versions."""
    venv = os.path.join(workdir, "flask-venv")
    python = os.path.join(venv, "bin", "python")
    pins = [f"{dist}=={importlib.metadata.version(dist)}"
            for dist in ("openslide-python", "openslide-bin", "pillow")]
    wanted = " ".join(["flask", *pins])
    marker = os.path.join(venv, ".bench-peers")
    with contextlib.suppress(OSError), open(marker) as fh:
        if fh.read() == wanted and os.access(python, os.X_OK):
            say(f"Flask venv already set up ({venv}: {wanted})")
            return python
    say(f"creating {venv} with {wanted}")
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", "flask", *pins], check=True)
    subprocess.run([python, "-c", "import flask, openslide, PIL"], check=True)
    with open(marker, "w") as fh:
        fh.write(wanted)
    return python


# --- slides and tile lists -------------------------------------------------------------

def _gen_slide(job: tuple[str, int, int, int]) -> str:
    from readers.demo_slide import write_demo_slide

    path, width, height, seed = job
    return write_demo_slide(path, width, height, tile=256, seed=seed)


def ensure_slides(workdir: str, count: int, width: int, height: int) -> dict[str, str]:
    directory = os.path.join(workdir, "slides", f"{count}x{width}x{height}")
    os.makedirs(directory, exist_ok=True)
    jobs = [(os.path.join(directory, f"s{i}.tiff"), width, height, 1000 + i)
            for i in range(count)]
    todo = [j for j in jobs if not os.path.exists(j[0])]
    if todo:
        say(f"generating {len(todo)} slide(s) {width}x{height} in {directory} ...")
        with mp.get_context("spawn").Pool(min(2, len(todo))) as pool:
            pool.map(_gen_slide, todo)
    else:
        say(f"slides already generated ({directory})")
    return {os.path.basename(j[0]): j[0] for j in jobs}


Tile = tuple[str, int, int, int]  # slide name, level, col, row


@dataclass(frozen=True)
class Geometry:
    tile_size: int
    overlap: int

    @property
    def label(self) -> str:
        return f"{self.tile_size}/{self.overlap}"


DZ = Geometry(254, 1)
NATIVE = Geometry(256, 0)


@dataclass
class TileSet:
    geometry: Geometry
    distinct: list[Tile]
    hot: list[Tile]
    probe: Tile  # an interior full-resolution tile, for the correctness check
    dzi: dict[str, tuple[int, int]]  # slide -> width, height


def warm_page_cache(paths: Iterable[str]) -> None:
    """Read every slide once, so the first server measured does not pay for the disk
    reads that every later one finds in the page cache (that cost the first run 20 %)."""
    t0, total = time.monotonic(), 0
    for path in paths:
        with open(path, "rb") as fh:
            while chunk := fh.read(8 << 20):
                total += len(chunk)
    say(f"read {total / 1e9:.1f} GB of slides into the page cache in "
        f"{time.monotonic() - t0:.1f}s")


def tile_set(slides: dict[str, str], geo: Geometry, levels: int, hot: int, seed: int
             ) -> TileSet:
    import openslide
    from openslide.deepzoom import DeepZoomGenerator

    distinct: list[Tile] = []
    top_interior: list[Tile] = []
    dims: dict[str, tuple[int, int]] = {}
    for name, path in slides.items():
        with openslide.OpenSlide(path) as osr:
            dz = DeepZoomGenerator(osr, geo.tile_size, geo.overlap, limit_bounds=True)
            top = dz.level_count - 1
            dims[name] = dz.level_dimensions[top]
            for level in range(top - levels + 1, top + 1):
                cols, rows = dz.level_tiles[level]
                distinct += [(name, level, c, r) for r in range(rows) for c in range(cols)]
            cols, rows = dz.level_tiles[top]
            top_interior += [(name, top, c, r) for r in range(1, rows - 1)
                             for c in range(1, cols - 1)]
    random.Random(seed).shuffle(distinct)
    hot_tiles = random.Random(seed + 1).sample(top_interior, hot)
    return TileSet(geo, distinct, hot_tiles, _busiest(slides, geo, top_interior, seed), dims)


def _busiest(slides: dict[str, str], geo: Geometry, tiles: list[Tile], seed: int) -> Tile:
    """Of 40 sampled tiles, the one with the most detail: a blank background tile would
    survive any JPEG re-encoding unchanged and prove nothing in the pixel comparison."""
    import numpy as np
    import openslide
    from openslide.deepzoom import DeepZoomGenerator

    best, best_std = tiles[0], -1.0
    for name, level, col, row in random.Random(seed + 2).sample(tiles, min(40, len(tiles))):
        with openslide.OpenSlide(slides[name]) as osr:
            dz = DeepZoomGenerator(osr, geo.tile_size, geo.overlap, limit_bounds=True)
            std = float(np.asarray(dz.get_tile(level, (col, row)), np.float32).std())
        if std > best_std:
            best, best_std = (name, level, col, row), std
    return best


# --- processes --------------------------------------------------------------------------

def _prctl(option: int, value: int) -> None:
    with contextlib.suppress(OSError):  # Linux only
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(option, value)


def _die_with_parent() -> None:
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    start: int  # starttime in ticks since boot: (pid, start) names one process
    cpu: int  # utime + stime, ticks
    state: str
    name: str


def proc_info(pid: int) -> ProcInfo | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return None
    name = stat[stat.index("(") + 1:stat.rindex(")")]
    f = stat[stat.rindex(")") + 2:].split()
    return ProcInfo(pid, int(f[1]), int(f[19]), int(f[11]) + int(f[12]), f[0], name)


def all_procs() -> dict[int, ProcInfo]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = proc_info(int(entry))
            if info is not None:
                out[info.pid] = info
    return out


def process_tree(roots: Iterable[int]) -> dict[int, ProcInfo]:
    procs = all_procs()
    children: dict[int, list[int]] = {}
    for p in procs.values():
        children.setdefault(p.ppid, []).append(p.pid)
    todo, tree = list(roots), {}
    while todo:
        pid = todo.pop()
        if pid in procs and pid not in tree:
            tree[pid] = procs[pid]
            todo += children.get(pid, [])
    return tree


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def short_name(pid: int, info: ProcInfo) -> str:
    cmd = cmdline(pid)
    for key, label in (("router.cli", "router"), ("workers.cli", "worker"),
                       ("wsgateway.cli", "gateway"), ("tilerouter serve", "supervisor"),
                       ("iipsrv", "iipsrv"), ("lighttpd", "lighttpd"),
                       ("memcached", "memcached"), ("deepzoom_multiserver", "flask")):
        if key in cmd:
            return label
    return info.name


class Processes:
    """Every server process this run started; each in its own session (process group)."""

    def __init__(self, logdir: str) -> None:
        self.logdir = logdir
        self.running: list[subprocess.Popen[bytes]] = []
        self.seen: dict[int, ProcInfo] = {}  # descendants ever observed, to sweep at stop

    def start(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None,
              cwd: str | None = None) -> subprocess.Popen[bytes]:
        log_path = os.path.join(self.logdir, f"{name}.log")
        with open(log_path, "ab") as fh:
            proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=fh,
                                    stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                    start_new_session=True, preexec_fn=_die_with_parent)
        self.running.append(proc)
        return proc

    def observe(self, roots: Iterable[int]) -> dict[int, ProcInfo]:
        tree = process_tree(roots)
        self.seen.update(tree)
        return tree

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
        self.observe([proc.pid])
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                say(f"pid {proc.pid} ignored SIGTERM for {timeout:.0f}s; killing its group")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)  # the leader's group, if anything is left
        if proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(3)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc in self.running:
            self.running.remove(proc)
        self.sweep()

    def sweep(self, grace: float = 3.0) -> list[int]:
        """Kill any observed descendant that is still the same live process; return them."""
        deadline = time.monotonic() + grace
        while True:
            alive = [p for p in self.seen.values() if _same_alive(p)]
            if not alive or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        for p in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
        time.sleep(0.1 if alive else 0)
        for pid in list(self.seen):  # orphans re-parented to us (subreaper): reap them
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
        for p in alive:
            self.seen.pop(p.pid, None)
        self.seen = {pid: p for pid, p in self.seen.items() if _same_alive(p)}
        return [p.pid for p in alive]

    def stop_all(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # finish the cleanup
            signal.signal(sig, signal.SIG_IGN)
        for proc in reversed(list(self.running)):
            self.stop(proc)
        left = self.sweep()
        if left:
            say(f"killed leftover processes {left}")


def _same_alive(p: ProcInfo) -> bool:
    now = proc_info(p.pid)
    return now is not None and now.start == p.start and now.state not in ("Z", "X")


def machine_busy() -> int:
    """Non-idle CPU ticks of the whole machine since boot (/proc/stat)."""
    with open("/proc/stat") as fh:
        f = [int(v) for v in fh.readline().split()[1:]]
    return f[0] + f[1] + f[2] + f[5] + f[6]  # user nice system irq softirq (guest in user)


def wait_quiet(max_wait: float, threshold: float = 0.25) -> None:
    """Wait (up to max_wait s) until processes other than ours use < threshold cores."""
    deadline = time.monotonic() + max_wait
    waited = False
    while True:
        b0 = machine_busy()
        time.sleep(1.0)
        load = (machine_busy() - b0) / CLK_TCK
        if load < threshold:
            if waited:
                say(f"    machine quiet again ({load:.2f} cores busy)")
            return
        if time.monotonic() > deadline:
            say(f"    machine still busy ({load:.2f} cores) after {max_wait:.0f}s: measuring "
                "anyway (see OTHER LOAD in the notes)")
            return
        if not waited:
            say(f"    machine busy ({load:.2f} cores used by other processes); waiting")
            waited = True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 10.0) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("Content-Type", "")
    except OSError as exc:
        return 0, str(exc).encode(), ""


# --- servers ----------------------------------------------------------------------------

@dataclass
class Peer:
    key: str  # config id: --only matches its prefix
    server: str
    geometry: Geometry
    port: int
    tile_path: Callable[[Tile], str]
    dzi_path: Callable[[str], str]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    note: str = ""
    stats_path: str = ""  # JSON stats saved after each run
    client_cpus: str = ""  # the load generator runs pinned here (taskset -c) when set
    workloads: tuple[str, ...] = ("distinct", "repeated")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def own_cores() -> tuple[str, str] | None:
    """(worker CPUs, everyone else's CPUs): the upper half of the CPUs we may use for the
    workers, the rest for gateway, router and load generator; None on one CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    half = len(cpus) // 2
    return ",".join(map(str, cpus[half:])), ",".join(map(str, cpus[:half]))


def start_tilerouter(ps: Processes, slides_dir: str, geo: Geometry, extra: str = "",
                     split: tuple[str, str] | None = None) -> Peer:
    """``split`` (from own_cores): workers pinned to their own CPUs, one per CPU, and the
    gateway, router and load generator on the others."""
    port, stats = free_port(), free_port()
    exe = os.path.join(os.path.dirname(sys.executable), "tilerouter")
    workers = ["--workers", "0", "--worker-cpus", split[0]] if split else [
        "--workers", str(WORKERS)]
    argv = [exe, "serve", "--slides", slides_dir, "--port", str(port), "--stats-port",
            str(stats), *workers, "--tile-size", str(geo.tile_size),
            "--overlap", str(geo.overlap), "--tile-quality", str(QUALITY),
            # one benchmark websocket asks for more than the default per-connection limit
            # (2000/s) a viewer ever would; HTTP has no such limit
            "--max-requests-per-second", "0", *shlex.split(extra)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TILEROUTER_")}
    proc = ps.start(f"tilerouter-{geo.tile_size}-{geo.overlap}", argv, env=env, cwd=REPO)
    mode = "passthrough" if geo.overlap == 0 else "render"
    placement = (f"workers on CPUs {split[0]}, gateway + router + wrk on CPUs {split[1]}"
                 if split else f"{WORKERS} workers")
    peer = Peer(f"tilerouter-{geo.label}", "tilerouter", geo, port,
                lambda t: f"/dz/{t[0]}_files/{t[1]}/{t[2]}_{t[3]}.jpeg",
                lambda s: f"/dz/{s}.dzi", [proc],
                note=f"{placement}, {mode}, gateway hot cache 64 MiB (default), "
                "websocket rate limit off"
                + (f", {extra}" if extra else ""),
                stats_path="/stats")
    if split:
        peer.key += "-own-cores"
        peer.server = OWN_CORES_SERVER
        peer.client_cpus = split[1]
        peer.workloads = ("distinct",)
    return peer


def start_openslide(ps: Processes, slides_dir: str, geo: Geometry, python: str, script: str
                    ) -> Peer:
    port = free_port()
    argv = [python, script, "-l", "127.0.0.1", "-p", str(port), "-s", str(geo.tile_size),
            "-e", str(geo.overlap), "-Q", str(QUALITY), slides_dir]
    proc = ps.start(f"openslide-dz-{geo.tile_size}-{geo.overlap}", argv,
                    cwd=os.path.dirname(script))
    return Peer(f"openslide-{geo.label}", "OpenSlide DZ multiserver", geo, port,
                lambda t: f"/{t[0]}_files/{t[1]}/{t[2]}_{t[3]}.jpeg",
                lambda s: f"/{s}.dzi", [proc],
                note="Flask dev server, threaded=True, 1 process")


def start_iip(ps: Processes, slides_dir: str, rundir: str, memcached: bool) -> Peer:
    port = free_port()
    tag = "iip-memcached" if memcached else "iip"
    procs = []
    extra = ""
    if memcached:
        mport = free_port()
        procs.append(ps.start("memcached", ["memcached", "-l", "127.0.0.1", "-p", str(mport),
                                            "-U", "0", "-m", "512", "-t", "2", "-u", "root"]))
        extra = f',\n      "MEMCACHED_SERVERS" => "127.0.0.1:{mport}"'
        _wait_port(mport, procs[0])
    confdir = os.path.join(rundir, tag)
    os.makedirs(os.path.join(confdir, "www"), exist_ok=True)
    with open(os.path.join(PEERS_DIR, "lighttpd.conf.in")) as fh:
        conf = fh.read()
    values = {"PORT": str(port), "DOCROOT": os.path.join(confdir, "www"), "LOGDIR": confdir,
              "RUNDIR": confdir, "IIPSRV": iipsrv_path(), "PROCS": str(IIP_PROCS),
              "SLIDES": slides_dir.rstrip("/"), "QUALITY": str(QUALITY), "EXTRA_ENV": extra}
    for k, v in values.items():
        conf = conf.replace(f"@{k}@", v)
    conf_path = os.path.join(confdir, "lighttpd.conf")
    with open(conf_path, "w") as fh:
        fh.write(conf)
    subprocess.run(["lighttpd", "-tt", "-f", conf_path], check=True, capture_output=True)
    procs.append(ps.start(f"lighttpd-{tag}", ["lighttpd", "-D", "-f", conf_path]))
    base = "/fcgi-bin/iipsrv.fcgi?DeepZoom="
    name = "IIPImage + memcached" if memcached else "IIPImage"
    return Peer(tag, name, NATIVE, port,
                lambda t: f"{base}{t[0]}_files/{t[1]}/{t[2]}_{t[3]}.jpg",
                lambda s: f"{base}{s}.dzi", procs,
                note=f"lighttpd + mod_fastcgi, {IIP_PROCS} iipsrv"
                + (", memcached" if memcached else ""))


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"process {proc.args[0]} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.05)
    raise BenchError(f"nothing listening on port {port} after {timeout:.0f}s")


def wait_ready(peer: Peer, slides: Iterable[str], timeout: float = 120.0) -> None:
    """Every slide's DZI answers 200 (the slides are then open somewhere)."""
    deadline = time.monotonic() + timeout
    for slide in slides:
        while True:
            for proc in peer.procs:
                if proc.poll() is not None:
                    raise BenchError(f"{peer.server} exited with {proc.returncode} at start "
                                     f"(log: {proc.args})")
            status, body, _ = http_get(peer.url(peer.dzi_path(slide)), timeout=5)
            if status == 200:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"{peer.server} not ready after {timeout:.0f}s: "
                                 f"{status} {body[:200]!r}")
            time.sleep(0.2)


# --- load -------------------------------------------------------------------------------

@dataclass
class Result:
    server: str
    geometry: str
    workload: str
    tiles_per_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    cpu_per_1000: float | None = None
    cores: float | None = None
    non2xx: int | None = None
    sock_errors: int | None = None
    repeats: int = 0
    note: str = ""
    cpu_by_process: dict[str, float] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)


def write_list(path: str, peer: Peer, tiles: Sequence[Tile]) -> str:
    with open(path, "w") as fh:
        fh.write("\n".join(peer.tile_path(t) for t in tiles) + "\n")
    return path


WS_WINDOW = 4  # requests in flight per websocket (a viewer keeps several)
OTHER_LIMIT = 0.2  # cores used by neither the server nor wrk before a run is redone


def best_of_attempts(args: argparse.Namespace, run_once: Callable[[int], Result]) -> Result:
    """``run_once(attempt)``, redone (up to --attempts) while other processes loaded the
    machine; keeps the attempt with the least other load."""
    best: Result | None = None
    attempt = 0
    for attempt in range(1, args.attempts + 1):
        wait_quiet(args.quiet_wait)
        r = run_once(attempt)
        if best is None or r.raw["other_cores"] < best.raw["other_cores"]:
            best = r
        if r.raw["other_cores"] <= OTHER_LIMIT:
            break
        say(f"    other processes used {r.raw['other_cores']:.2f} cores during the run"
            + ("; running again" if attempt < args.attempts else ""))
    assert best is not None
    if best.raw["attempt"] > 1 or best.raw["other_cores"] > OTHER_LIMIT:
        best.note += f", attempt {best.raw['attempt']:.0f} of {attempt}"
    return best


def measure(ps: Processes, peer: Peer, listfile: str, workload: str,
            args: argparse.Namespace, rundir: str, websocket: bool = False) -> Result:
    """run_wrk via best_of_attempts; a distinct run goes on down the list, so no attempt
    sees a tile an earlier one fetched."""
    offset = 0

    def once(attempt: int) -> Result:
        nonlocal offset
        r = run_wrk(ps, peer, listfile, workload, args, rundir, offset, attempt, websocket)
        offset = int(r.raw["next"]) if workload == "distinct" else 0
        return r

    return best_of_attempts(args, once)


def run_wrk(ps: Processes, peer: Peer, listfile: str, workload: str, args: argparse.Namespace,
            rundir: str, offset: int = 0, attempt: int = 1, websocket: bool = False) -> Result:
    """One load run: wrk over HTTP, or (``websocket``) scripts/peers/wsdrive.py on /ws
    with the same connection count, ``WS_WINDOW`` requests in flight on each."""
    lua = os.path.join(PEERS_DIR, "walk.lua")
    argv = ["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d",
            f"{args.duration:g}s", "--timeout", "10s", "--latency", "-s", lua,
            peer.url("/"), "--", listfile, str(args.threads), str(offset)]
    if peer.client_cpus:
        argv = ["taskset", "-c", peer.client_cpus, *argv]
    if websocket:
        argv = [sys.executable, os.path.join(PEERS_DIR, "wsdrive.py"), str(peer.port), listfile,
                "--procs", str(args.threads), "--conns",
                str(max(1, args.connections // args.threads)), "--window", str(WS_WINDOW),
                "--duration", f"{args.duration:g}", "--offset", str(offset)]
    tool = "wsdrive" if websocket else "wrk"
    roots = [p.pid for p in peer.procs]
    stats0 = _stats(peer)
    before = ps.observe(roots)
    everyone0 = all_procs()
    busy0, kids0 = machine_busy(), resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=args.duration + 60,
                         check=False)
    wall = time.monotonic() - t0
    after = ps.observe(roots)
    busy1, kids1 = machine_busy(), resource.getrusage(resource.RUSAGE_CHILDREN)
    others = _others(everyone0, all_procs(), set(after) | {os.getpid()}, wall)
    tag = f"{peer.key.replace('/', '-')}-{workload}-{attempt}"
    with open(os.path.join(rundir, f"{tool}-{tag}.txt"), "w") as fh:
        fh.write(" ".join(argv) + "\n\n" + out.stdout + out.stderr)
    m = re.search(r"^BENCH (.*)$", out.stdout, re.M)
    if out.returncode != 0 or m is None:
        raise BenchError(f"{tool} failed ({out.returncode}): {out.stderr.strip()[:300]}")
    raw = {k: float(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
    raw.update(wall_s=wall, attempt=attempt, offset=offset)
    by_name: dict[str, float] = {}
    total = 0
    for pid, info in after.items():
        prev = before.get(pid)
        delta = info.cpu - (prev.cpu if prev is not None and prev.start == info.start else 0)
        total += delta
        label = short_name(pid, info)
        by_name[label] = by_name.get(label, 0.0) + delta / CLK_TCK
    cpu_s = total / CLK_TCK
    seconds = raw["duration_us"] / 1e6
    ok = raw["requests"] - raw["status"]
    sock = int(raw["connect"] + raw["read"] + raw["write"] + raw["timeout"])
    repeats = int(raw["repeats"]) if workload == "distinct" else 0
    wrk_cpu = (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime)
    other = (busy1 - busy0) / CLK_TCK - cpu_s - wrk_cpu  # neither server nor wrk
    raw.update(server_cpu_s=cpu_s, wrk_cpu_s=wrk_cpu, other_cpu_s=other,
               other_cores=other / wall)
    stats1 = _stats(peer)
    tr_notes = ""
    if stats0 and stats1:
        raw["stats"] = stats1
        d = {k: _dig(stats1, k) - _dig(stats0, k) for k in
             ("routing.requests", "routing.prefetches", "gateway.hot_hits")}
        raw["stats_delta"] = d
        tr_notes = (f"router requests {d['routing.requests']:.0f}, prefetches "
                    f"{d['routing.prefetches']:.0f}, gateway hot hits {d['gateway.hot_hits']:.0f}")
    notes = [f"LIST WRAPPED: {repeats} repeated tiles" if repeats else "", tr_notes,
             f"{tool} {wrk_cpu / wall:.2f} cores",
             f"OTHER LOAD {other / wall:.2f} cores ({others})" if other / wall > OTHER_LIMIT
             else ""]
    raw["others"] = others
    note = ", ".join(filter(None, notes))
    server = f"{peer.server} (websocket)" if websocket else peer.server
    return Result(server, peer.geometry.label, workload,
                  tiles_per_s=ok / seconds, p50_ms=raw["p50_us"] / 1000,
                  p99_ms=raw["p99_us"] / 1000,
                  cpu_per_1000=cpu_s / ok * 1000 if ok else None,
                  cores=cpu_s / seconds, non2xx=int(raw["status"]), sock_errors=sock,
                  repeats=repeats, note=note,
                  cpu_by_process={k: round(v / seconds, 2) for k, v in by_name.items()},
                  raw=raw)


def _others(before: dict[int, ProcInfo], after: dict[int, ProcInfo], ours: set[int],
            wall: float) -> str:
    """The busiest processes that are neither the server nor the benchmark (cores)."""
    used: dict[str, float] = {}
    for pid, info in after.items():
        prev = before.get(pid)
        if pid in ours or prev is None or prev.start != info.start:
            continue
        if info.cpu > prev.cpu:
            name = (cmdline(pid) or info.name)[:60]
            used[name] = used.get(name, 0.0) + (info.cpu - prev.cpu) / CLK_TCK / wall
    top = sorted(used.items(), key=lambda kv: -kv[1])[:3]
    return ", ".join(f"{name}: {cores:.2f}" for name, cores in top if cores >= 0.02) or (
        "short-lived processes")


def _stats(peer: Peer) -> dict[str, Any] | None:
    if not peer.stats_path:
        return None
    status, body, _ = http_get(peer.url(peer.stats_path))
    try:
        return json.loads(body) if status == 200 else None
    except ValueError:
        return None


def _dig(obj: dict[str, Any], dotted: str) -> float:
    for part in dotted.split("."):
        obj = obj.get(part, {}) if isinstance(obj, dict) else {}
    return float(obj) if isinstance(obj, (int, float)) else 0.0


# --- correctness ------------------------------------------------------------------------

def check_peer(peer: Peer, ts: TileSet, slides: dict[str, str]) -> list[str]:
    """DZI geometry and one interior tile: decodes as JPEG of the expected size; pixels
    compared with OpenSlide's own DeepZoomGenerator tile. Returns findings (never fails)."""
    import numpy as np
    import openslide
    from openslide.deepzoom import DeepZoomGenerator
    from PIL import Image

    out = []
    name, level, col, row = ts.probe
    status, body, _ = http_get(peer.url(peer.dzi_path(name)))
    if status != 200:
        out.append(f"DZI {status}")
    else:
        try:
            root = ET.fromstring(body)
            size = root.find("{*}Size")
            got = (int(root.get("TileSize", -1)), int(root.get("Overlap", -1)),
                   int(size.get("Width", -1)) if size is not None else -1,
                   int(size.get("Height", -1)) if size is not None else -1)
            want = (peer.geometry.tile_size, peer.geometry.overlap, *ts.dzi[name])
            out.append("DZI ok" if got == want else f"DZI MISMATCH {got} != {want}")
        except (ET.ParseError, ValueError) as exc:
            out.append(f"DZI unparsable: {exc}")
    status, body, ctype = http_get(peer.url(peer.tile_path(ts.probe)))
    if status != 200:
        return [*out, f"tile {status}: {body[:120]!r}"]
    try:
        img = Image.open(io.BytesIO(body))
        fmt = img.format
        img = img.convert("RGB")
    except OSError as exc:
        return [*out, f"tile does not decode: {exc}"]
    expect = peer.geometry.tile_size + 2 * peer.geometry.overlap
    size_ok = img.size == (expect, expect)
    out.append(f"tile {fmt} {img.size[0]}x{img.size[1]} ({ctype})"
               + ("" if size_ok and fmt == "JPEG" else f" MISMATCH, want JPEG {expect}x{expect}"))
    with openslide.OpenSlide(slides[name]) as osr:
        dz = DeepZoomGenerator(osr, peer.geometry.tile_size, peer.geometry.overlap,
                               limit_bounds=True)
        ref = dz.get_tile(level, (col, row)).convert("RGB")
    if ref.size == img.size:
        diff = np.abs(np.asarray(img, np.int16) - np.asarray(ref, np.int16))
        out.append(f"vs OpenSlide pixels: mean |diff| {diff.mean():.2f}, max {diff.max()}")
    return out


# --- OpenSlide in-process ---------------------------------------------------------------

def _render_proc(paths: dict[str, str], tiles: list[Tile], geo: Geometry, duration: float,
                 ready: Any, start: Any, results: Any, cpu: int | None = None) -> None:
    import openslide
    from openslide.deepzoom import DeepZoomGenerator

    if cpu is not None:
        os.sched_setaffinity(0, {cpu})

    cache = openslide.OpenSlideCache(64 << 20)  # as a tilerouter worker (openslide_cache_bytes)
    gens = {}
    for name, path in paths.items():
        osr = openslide.OpenSlide(path)
        osr.set_cache(cache)
        gens[name] = DeepZoomGenerator(osr, geo.tile_size, geo.overlap, limit_bounds=True)
    ready.put(os.getpid())
    start.wait()
    t0, cpu0 = time.perf_counter(), time.process_time()
    end = t0 + duration
    n = 0
    for name, level, col, row in itertools.cycle(tiles):
        buf = io.BytesIO()
        gens[name].get_tile(level, (col, row)).save(buf, "jpeg", quality=QUALITY)
        n += 1
        if time.perf_counter() >= end:
            break
    results.put((n, time.perf_counter() - t0, time.process_time() - cpu0, n > len(tiles)))


def raw_render(slides: dict[str, str], ts: TileSet, args: argparse.Namespace,
               procs: int = WORKERS, cpus: Sequence[int] = ()) -> Result:
    """OpenSlide's own rate on `procs` processes (or one pinned to each of ``cpus``),
    redone while others load the machine."""
    def once(attempt: int) -> Result:
        r = _raw_render_once(slides, ts, args.duration, len(cpus) or procs, cpus)
        r.raw["attempt"] = attempt
        return r

    return best_of_attempts(args, once)


def _raw_render_once(slides: dict[str, str], ts: TileSet, duration: float, procs: int,
                     cpus: Sequence[int] = ()) -> Result:
    ctx = mp.get_context("spawn")
    ready, results, start = ctx.Queue(), ctx.Queue(), ctx.Event()
    workers = [ctx.Process(target=_render_proc, daemon=True,
                           args=(slides, ts.distinct[i::procs], ts.geometry, duration, ready,
                                 start, results, cpus[i] if cpus else None))
               for i in range(procs)]
    try:
        for w in workers:
            w.start()
        for _ in workers:
            ready.get(timeout=120)
        busy0, t0 = machine_busy(), time.monotonic()
        start.set()
        got = [results.get(timeout=duration + 120) for _ in workers]
        busy1, wall = machine_busy(), time.monotonic() - t0
    finally:
        for w in workers:
            if w.is_alive():
                w.terminate()
            w.join(5)
    rate = sum(n / secs for n, secs, _, _ in got)
    cpu = sum(c for _, _, c, _ in got)
    other = max(0.0, (busy1 - busy0) / CLK_TCK - cpu) / wall
    wrapped = any(w for _, _, _, w in got)
    note = f"{procs} processes: get_tile + Pillow JPEG q{QUALITY}, no HTTP"
    note += f", pinned to CPUs {','.join(map(str, cpus))}" if cpus else ""
    note += "; LIST WRAPPED" if wrapped else ""
    note += f", OTHER LOAD {other:.2f} cores" if other > OTHER_LIMIT else ""
    return Result(OWN_CORES_RAW if cpus else "OpenSlide in-process", ts.geometry.label,
                  "distinct",
                  tiles_per_s=rate, cores=cpu / duration,
                  cpu_per_1000=cpu / sum(n for n, _, _, _ in got) * 1000, note=note,
                  raw={"other_cores": other, "cpu_s": cpu, "wall_s": wall})


# --- report -----------------------------------------------------------------------------

def _fmt(v: float | None, spec: str = ".0f") -> str:
    return "n/a" if v is None else format(v, spec)


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


def markdown(results: list[Result]) -> str:
    head = ["server", "geometry", "workload", "tiles/s", "p50 ms", "p99 ms",
            "CPU s / 1000 tiles", "server cores", "non-2xx", "socket errors", "notes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        lines.append("| " + " | ".join([
            r.server, r.geometry, r.workload, _fmt(r.tiles_per_s), _fmt(r.p50_ms, ".1f"),
            _fmt(r.p99_ms, ".1f"), _fmt(r.cpu_per_1000, ".2f"), _fmt(r.cores, ".2f"),
            _fmt(r.non2xx, "d"), _fmt(r.sock_errors, "d"), r.note]) + " |")
    for label, num, den, target in RATIOS:
        a, b = find(results, *num), find(results, *den)
        if a is None or b is None or not a.tiles_per_s or not b.tiles_per_s:
            value, verdict = "n/a", "not measured"
        else:
            ratio = a.tiles_per_s / b.tiles_per_s
            value = f"{ratio:.2f}x"
            verdict = "MET" if ratio >= target else "MISSED"
        lines.append(f"| **ratio**: {label} | | | **{value}** | | | | | | | "
                     f"target >= {target:g}x: {verdict} |")
    return "\n".join(lines)


# --- main -------------------------------------------------------------------------------

CONFIGS = ("tilerouter-254/1", "openslide-254/1", "tilerouter-256/0", "openslide-256/0",
           "iip", "iip-memcached", "raw", "own-cores")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads")
    ap.add_argument("--connections", type=int, default=16, help="wrk connections")
    ap.add_argument("--slide-count", type=int, default=4)
    ap.add_argument("--slide-size", default="32768x24576", help="WIDTHxHEIGHT")
    ap.add_argument("--levels", type=int, default=4, help="highest DeepZoom levels in distinct")
    ap.add_argument("--hot", type=int, default=50, help="tiles in the repeated set")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--workdir", default="/tmp/bench-peers")
    ap.add_argument("--only", default="", help=f"comma-separated prefixes of {CONFIGS}")
    ap.add_argument("--quiet-wait", type=float, default=120.0,
                    help="before each run, wait up to this long for other CPU load to stop")
    ap.add_argument("--attempts", type=int, default=3,
                    help="runs per measurement while other processes load the machine")
    ap.add_argument("--tilerouter-extra", default="",
                    help="extra 'tilerouter serve' flags, e.g. \"--prefetch false\"")
    ap.add_argument("--install-only", action="store_true", help="install and generate, stop")
    ap.add_argument("--json", help="also write the results here (default WORKDIR/run/...)")
    return ap.parse_args(argv)


def git_state() -> str:
    """The tilerouter code under test: commit, and how many files differ from it."""
    def git(*a: str) -> str:
        return subprocess.run(["git", "-C", REPO, *a], capture_output=True, text=True,
                              check=False).stdout.strip()
    dirty = [line for line in git("status", "--porcelain", "--untracked-files=no").splitlines()
             if line.strip()]
    return git("rev-parse", "--short", "HEAD") + (f" + {len(dirty)} modified files"
                                                    if dirty else "")


def _on_signal(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # even if inherited ignored
        signal.signal(sig, _on_signal)
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)  # servers' orphaned children come to us to be reaped
    width, height = (int(v) for v in args.slide_size.lower().split("x"))
    selected = [c for c in CONFIGS
                if not args.only or any(c.startswith(o) for o in args.only.split(","))]
    os.makedirs(args.workdir, exist_ok=True)
    rundir = os.path.join(args.workdir, "run")
    shutil.rmtree(rundir, ignore_errors=True)
    os.makedirs(rundir)

    code_at_start = git_state()
    say(f"tilerouter code: {code_at_start}")
    ensure_apt()
    script = ensure_multiserver(args.workdir)
    flask_python = ensure_flask_venv(args.workdir)
    slides = ensure_slides(args.workdir, args.slide_count, width, height)
    slides_dir = os.path.dirname(next(iter(slides.values())))
    if args.install_only:
        return 0
    warm_page_cache(slides.values())

    sets = {g.label: tile_set(slides, g, args.levels, args.hot, args.seed) for g in (DZ, NATIVE)}
    for ts in sets.values():
        say(f"{ts.geometry.label}: {len(ts.distinct)} distinct tiles "
            f"(top {args.levels} levels of {len(slides)} slides), {len(ts.hot)} hot")

    ps = Processes(rundir)
    results: list[Result] = []
    checks: dict[str, list[str]] = {}
    failures: dict[str, str] = {}
    starters: dict[str, Callable[[], Peer]] = {
        "tilerouter-254/1": lambda: start_tilerouter(ps, slides_dir, DZ, args.tilerouter_extra),
        "openslide-254/1": lambda: start_openslide(ps, slides_dir, DZ, flask_python, script),
        "tilerouter-256/0": lambda: start_tilerouter(ps, slides_dir, NATIVE,
                                                     args.tilerouter_extra),
        "openslide-256/0": lambda: start_openslide(ps, slides_dir, NATIVE, flask_python,
                                                   script),
        "iip": lambda: start_iip(ps, slides_dir, rundir, memcached=False),
        "iip-memcached": lambda: start_iip(ps, slides_dir, rundir, memcached=True),
        "own-cores": lambda: start_tilerouter(ps, slides_dir, DZ, args.tilerouter_extra,
                                              own_cores()),
    }
    try:
        for key in selected:
            if key == "own-cores":
                split = own_cores()
                if split is None:
                    failures[key] = "needs two CPUs: one for the workers, one for the rest"
                    continue
                say(f"OpenSlide in-process render 254/1 pinned to CPUs {split[0]}")
                results.append(raw_render(slides, sets[DZ.label], args,
                                          cpus=[int(c) for c in split[0].split(",")]))
                say(f"    {results[-1].tiles_per_s:.0f} tiles/s")
            if key == "raw":
                for ts in sets.values():
                    say(f"OpenSlide in-process render {ts.geometry.label}, {args.duration:g}s")
                    results.append(raw_render(slides, ts, args))
                    say(f"    {results[-1].tiles_per_s:.0f} tiles/s")
                continue
            say(f"starting {key}")
            try:
                peer = starters[key]()
                wait_ready(peer, slides)
            except (BenchError, subprocess.CalledProcessError, OSError) as exc:
                failures[key] = str(exc)
                say(f"{key} could not run: {exc}")
                for proc in list(ps.running):
                    ps.stop(proc)
                continue
            ts = sets[peer.geometry.label]
            try:
                for workload, tiles in (("distinct", ts.distinct), ("repeated", ts.hot)):
                    if workload not in peer.workloads:
                        continue
                    listfile = write_list(os.path.join(rundir, f"urls-{key.replace('/', '-')}-"
                                                       f"{workload}.txt"), peer, tiles)
                    say(f"  wrk {key} {workload} ({len(tiles)} URLs)")
                    r = measure(ps, peer, listfile, workload, args, rundir)
                    r.note = "; ".join(filter(None, [peer.note, r.note]))
                    results.append(r)
                    say(f"    {r.tiles_per_s:.0f} tiles/s p50 {r.p50_ms:.1f} ms "
                        f"p99 {r.p99_ms:.1f} ms, {r.cores:.2f} cores {r.cpu_by_process}, "
                        f"non-2xx {r.non2xx}")
                if peer.server == "tilerouter":  # the viewer's own transport
                    listfile = os.path.join(rundir, f"ws-{key.replace('/', '-')}-repeated.txt")
                    with open(listfile, "w") as fh:
                        fh.write("".join(f"{t[0]} {t[1]} {t[2]} {t[3]}\n" for t in ts.hot))
                    say(f"  websocket {key} repeated ({len(ts.hot)} tiles)")
                    r = measure(ps, peer, listfile, "repeated", args, rundir, websocket=True)
                    r.note = "; ".join(filter(None, [peer.note, r.note,
                                                     f"{WS_WINDOW} in flight per websocket"]))
                    results.append(r)
                    say(f"    {r.tiles_per_s:.0f} tiles/s p50 {r.p50_ms:.1f} ms "
                        f"p99 {r.p99_ms:.1f} ms, {r.cores:.2f} cores {r.cpu_by_process}")
                checks[f"{peer.server} {peer.geometry.label}"] = check_peer(peer, ts, slides)
            except (BenchError, subprocess.TimeoutExpired) as exc:
                failures[key] = str(exc)
                say(f"{key} failed: {exc}")
            finally:
                for proc in peer.procs:
                    ps.stop(proc)
        if any(k.startswith("iip") for k in selected):
            results.append(Result("IIPImage", "254/1", "distinct", note=(
                "n/a: iipsrv 1.1 DeepZoom = the file's tile size, Overlap=\"0\" hard-coded")))
    finally:
        ps.stop_all()

    total = time.monotonic() - T0
    code_at_end = git_state()
    code = code_at_start if code_at_end == code_at_start else (
        f"{code_at_start} at start, {code_at_end} at end: THE CODE CHANGED DURING THE RUN")
    table = markdown(results)
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
    print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s on the same "
          f"{os.cpu_count()} cores; {len(slides)} slides {width}x{height}; total run time "
          f"{total:.0f} s; tilerouter code {code}; raw output in {rundir}")
    out = args.json or os.path.join(rundir, "results.json")
    with open(out, "w") as fh:
        json.dump({"args": vars(args), "total_s": total, "code": code, "checks": checks,
                   "failures": failures, "results": [r.__dict__ for r in results],
                   "table": table}, fh, indent=1, default=str)
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt as exc:
        say(f"interrupted ({exc}); servers stopped")
        raise SystemExit(130) from None
