"""Starting and stopping the servers compared by scripts/bench_peers.py: tilerouter
(benchlib.server), OpenSlide's DeepZoom example server (Flask), and IIPImage behind
lighttpd (plain or with memcached). Each is one ``Peer``: port, URL scheme, processes."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from .peers_common import (
    IIP_PROCS,
    NATIVE,
    OWN_CORES_SERVER,
    PEERS_DIR,
    QUALITY,
    WORKERS,
    BenchError,
    Geometry,
    Tile,
    http_get,
    say,
)
from .peers_install import iipsrv_path
from .procs import (
    ProcInfo,
    cmdline,
    free_port,
    process_tree,
    same_alive,
    spawn,
    stop_group,
)
from .server import SERVE_MODULE, ServerError, ServerOptions, ServerProcess

# who a server process is, from its command line (for CPU by process)
_LABELS = (("router.cli", "router"), ("workers.cli", "worker"), ("wsgateway.cli", "gateway"),
           (SERVE_MODULE, "supervisor"), ("tilerouter serve", "supervisor"),
           ("iipsrv", "iipsrv"), ("lighttpd", "lighttpd"), ("memcached", "memcached"),
           ("deepzoom_multiserver", "flask"))


def short_name(pid: int, info: ProcInfo) -> str:
    cmd = cmdline(pid)
    return next((label for key, label in _LABELS if key in cmd), info.name)


class Processes:
    """Every server process this run started; each in its own session (process group).
    Descendants seen while measuring are remembered, and killed if they outlive a stop."""

    def __init__(self, logdir: str) -> None:
        self.logdir = logdir
        self.running: list[subprocess.Popen[bytes]] = []
        self.stoppers: dict[int, Callable[[], None]] = {}  # pid -> its own stop
        self.seen: dict[int, ProcInfo] = {}  # descendants ever observed, to sweep at stop

    def start(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None,
              cwd: str | None = None) -> subprocess.Popen[bytes]:
        proc = spawn(argv, os.path.join(self.logdir, f"{name}.log"), env=env, cwd=cwd,
                     parent_death_signal=signal.SIGTERM)
        self.running.append(proc)
        return proc

    def adopt(self, proc: subprocess.Popen[bytes], stop: Callable[[], None]) -> None:
        """A process started elsewhere, stopped by ``stop`` (then swept like the others)."""
        self.running.append(proc)
        self.stoppers[proc.pid] = stop

    def observe(self, roots: Iterable[int]) -> dict[int, ProcInfo]:
        tree = process_tree(roots)
        self.seen.update(tree)
        return tree

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
        self.observe([proc.pid])
        stopper = self.stoppers.pop(proc.pid, None)
        if stopper is not None:
            stopper()
        else:
            stop_group(proc, signal.SIGTERM, timeout, os.path.basename(str(proc.args[0])))
        if proc in self.running:
            self.running.remove(proc)
        self.sweep()

    def sweep(self, grace: float = 3.0) -> list[int]:
        """Kill any observed descendant that is still the same live process; return them."""
        deadline = time.monotonic() + grace
        while True:
            alive = [p for p in self.seen.values() if same_alive(p)]
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
        self.seen = {pid: p for pid, p in self.seen.items() if same_alive(p)}
        return [p.pid for p in alive]

    def stop_all(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # finish the cleanup
            signal.signal(sig, signal.SIG_IGN)
        for proc in reversed(list(self.running)):
            self.stop(proc)
        left = self.sweep()
        if left:
            say(f"killed leftover processes {left}")


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
    options = ServerOptions(
        slides=slides_dir, workers=0 if split else WORKERS,
        worker_cpus=split[0] if split else None, log_level=None,
        extra=(("tile_size", str(geo.tile_size)), ("overlap", str(geo.overlap)),
               ("tile_quality", str(QUALITY)),
               # one benchmark websocket asks for more than the default per-connection
               # limit (2000/s) a viewer ever would; HTTP has no such limit
               ("max_requests_per_second", "0")),
        args=tuple(shlex.split(extra)))
    log_path = os.path.join(ps.logdir, f"tilerouter-{geo.tile_size}-{geo.overlap}.log")
    srv = ServerProcess(options, log_path)
    srv.start()
    assert srv.proc is not None
    proc = srv.proc
    ps.adopt(proc, srv.stop)
    try:
        srv.wait_ready()
    except ServerError as exc:  # the message ends with the log's tail: the path will do
        raise BenchError(f"tilerouter: {str(exc).splitlines()[0]} (log: {log_path})") from None
    mode = "passthrough" if geo.overlap == 0 else "render"
    placement = (f"workers on CPUs {split[0]}, gateway + router + wrk on CPUs {split[1]}"
                 if split else f"{WORKERS} workers")
    peer = Peer(f"tilerouter-{geo.label}", "tilerouter", geo, srv.port,
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
