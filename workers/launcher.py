"""Process supervision: start N children, restart any that dies, stop all on signal.

Used by ``tilerouter-workers`` (N workers, N defaults to the CPU count) and by
``tilerouter serve`` (router + workers + gateway). Children get PR_SET_PDEATHSIG
so they never outlive a supervisor that was killed outright. With ``--workers MIN:MAX``
an ``ElasticPool`` (workers/elastic.py) adds and retires workers; a retired worker's
planned exit is neither restarted nor counted as a crash.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from config.logs import setup_logging
from config.settings import Settings, parse_cli
from workers.elastic import ElasticPool
from workers.load_report import LoadChannel

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
MAX_BACKOFF = 10.0


def _die_with_parent() -> None:
    # not Linux (no libc.so.6): children may outlive a SIGKILLed supervisor
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    backoff: float = 0.25
    restart_at: float = 0.0
    restarts: int = 0
    exits: list[int] = field(default_factory=list)
    cpus: frozenset[int] = frozenset()  # CPU affinity ('' worker_cpus: any CPU)
    channel: LoadChannel | None = None  # elastic pools: the worker's load reports
    retiring: bool = False  # told to stop for good (elastic pool shrinking)

    def preexec(self) -> None:
        """Runs in the child before exec: die with the supervisor, stay on our CPUs."""
        _die_with_parent()
        if self.cpus:
            os.sched_setaffinity(0, self.cpus)


def component_argv(module: str) -> list[str]:
    return [sys.executable, "-m", module]


class Supervisor:
    def __init__(self, children: Sequence[Child], restart: bool = True,
                 pool: ElasticPool | None = None) -> None:
        self.children = list(children)
        self.restart = restart
        self.pool = pool
        self.stop_event = threading.Event()

    def start(self) -> None:
        for child in self.children:
            self._spawn(child)

    def add(self, child: Child) -> None:
        self.children.append(child)
        self._spawn(child)

    def retire(self, child: Child) -> None:
        """A planned stop: SIGTERM (the worker drains and says DISCONNECT), no restart."""
        child.retiring = True
        if child.proc is not None and child.proc.poll() is None:
            child.proc.send_signal(signal.SIGTERM)

    def _spawn(self, child: Child) -> None:
        env, fds = child.env, ()
        if child.channel is not None:
            env, fds = {**child.env, **child.channel.open()}, child.channel.pass_fds
        try:
            child.proc = subprocess.Popen(child.argv, env=env, preexec_fn=child.preexec,
                                          pass_fds=fds)
        except (OSError, subprocess.SubprocessError) as exc:
            if child.channel is not None:
                child.channel.close()
            # e.g. its CPUs were taken from our cpuset: retry later, keep the rest running
            log.error("cannot start %s: %s; retrying in %.2fs", child.name, exc, child.backoff)
            child.proc = None
            child.restart_at = time.monotonic() + child.backoff
            child.backoff = min(child.backoff * 2, MAX_BACKOFF)
            return
        finally:
            if child.channel is not None:
                child.channel.close_writer()  # the child holds its own copy
        child.started = time.monotonic()
        log.info("started %s (pid %d)", child.name, child.proc.pid)

    def poll(self) -> None:
        """Restart dead children, backing off when one keeps dying right after start."""
        now = time.monotonic()
        for child in list(self.children):
            if child.proc is None:
                if child.retiring:
                    self.children.remove(child)
                elif now >= child.restart_at:
                    child.restarts += 1
                    self._spawn(child)
                continue
            code = child.proc.poll()
            if code is None:
                if now - child.started > 10:
                    child.backoff = 0.25
                continue
            child.exits.append(code)
            child.proc = None
            if child.channel is not None:
                child.channel.close()
            if child.retiring:
                self.children.remove(child)
                log.info("%s retired (exit %s)", child.name, code)
                continue
            if not self.restart:
                continue
            log.warning("%s exited with %s; restarting in %.2fs", child.name, code,
                        child.backoff)
            child.restart_at = now + child.backoff
            child.backoff = min(child.backoff * 2, MAX_BACKOFF)
        if self.pool is not None and not self.stop_event.is_set():
            self.pool.tick(self, now)

    def run(self) -> None:
        self.start()
        try:
            while not self.stop_event.wait(0.1):
                self.poll()
        finally:
            self.stop()

    def stop(self, timeout: float = 10.0) -> None:
        procs = [c.proc for c in self.children if c.proc is not None and c.proc.poll() is None]
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("pid %d did not stop in %.0fs; killing", proc.pid, timeout)
                proc.kill()
                proc.wait()
        restarts = sum(c.restarts for c in self.children)
        log.info("stopped %d processes (%d restarts)", len(procs), restarts)
        if self.pool is not None:
            log.info("elastic pool: %d workers started on demand, %d retired idle",
                     self.pool.grown, self.pool.retired)
        for child in self.children:
            if child.channel is not None:
                child.channel.close()

    def install_signal_handlers(self) -> None:
        def _stop(signum: int, _frame: object) -> None:
            log.info("signal %s: stopping", signal.Signals(signum).name)
            self.stop_event.set()

        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGTERM, _stop)


def worker_child(settings: Settings, index: int, env: dict[str, str] | None = None) -> Child:
    """Worker ``index``; in an elastic pool with the pipe it reports its load through."""
    env = {**os.environ, **settings.to_env()} if env is None else env
    return Child(f"worker-{index}", component_argv("workers.cli"), env,
                 cpus=settings.worker_cpu_set,
                 channel=LoadChannel() if settings.worker_max > settings.worker_count else None)


def worker_children(settings: Settings) -> list[Child]:
    env = {**os.environ, **settings.to_env()}
    return [worker_child(settings, i, env) for i in range(settings.worker_count)]


def worker_pool(settings: Settings) -> ElasticPool | None:
    """The elastic pool of ``--workers MIN:MAX`` (None: a fixed pool)."""
    if settings.worker_max <= settings.worker_count:
        return None
    env = {**os.environ, **settings.to_env()}
    return ElasticPool(settings, lambda index: worker_child(settings, index, env))


def worker_cpus_usable(settings: Settings) -> bool:
    """False (logged) when ``worker_cpus`` names CPUs outside this process's affinity (a
    container's cpuset, a taskset): the settings only know the machine's CPU count."""
    allowed = frozenset(os.sched_getaffinity(0))
    missing = settings.worker_cpu_set - allowed
    if missing:
        log.error("worker_cpus: CPUs %s are not available to this process (it may use %s)",
                  sorted(missing), sorted(allowed))
    return not missing


def other_cpus(settings: Settings) -> frozenset[int]:
    """Where the router and gateways go: the CPUs left over by ``worker_cpus`` (or any,
    when workers take them all), so rendering never competes with relaying."""
    rest = frozenset(os.sched_getaffinity(0)) - settings.worker_cpu_set
    return rest if settings.worker_cpu_set and rest else frozenset()


def main(argv: Sequence[str] | None = None) -> int:
    settings, _ = parse_cli("Start N tilerouter workers and keep them running.", argv)
    setup_logging(settings.log_level, "launcher", settings.log_format)
    if not worker_cpus_usable(settings):
        return 2
    pool = worker_pool(settings)
    supervisor = Supervisor(worker_children(settings), pool=pool)
    supervisor.install_signal_handlers()
    log.info("launching %d workers%s against %s", settings.worker_count,
             f" (elastic: up to {settings.worker_max})" if pool else "", settings.backend)
    supervisor.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
