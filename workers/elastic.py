"""Elastic worker pools (``--workers MIN:MAX``): the launcher grows the pool when requests
wait and shrinks it when workers idle.

The signal needs no coordination service. Each router's heartbeat tells its workers how
many requests wait there and how long the oldest has waited (router/waiting.py); each
worker writes that, with its own requests in flight and idle time, into a pipe its
launcher gave it (workers/load_report.py); the launcher reads the pipes a few times a
second and ``decide`` turns what the workers last said into at most one action:

* grow: some router's oldest request has waited longer than ``scale_up_wait``, no worker
  is idle (an idle one would take it: the wait is the router's affinity choice, not a
  shortage), no started worker is still coming up, the last start is ``cooldown`` ago
  (the routers' view lags one heartbeat), and the pool is below MAX;
* retire: nothing waits anywhere, the pool is above MIN, and a worker has been idle for
  ``worker_idle_exit``: it gets SIGTERM, drains, says DISCONNECT (so its routers drop it
  and its slides from their maps at once) and is not restarted.

A worker that crashes is restarted as in a fixed pool; only a planned stop shrinks it.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from config.settings import Settings
from workers.load_report import reported_number

if TYPE_CHECKING:
    from workers.launcher import Child, Supervisor

log = logging.getLogger(__name__)

TICK = 0.1  # seconds between looks at the pipes
START_GRACE = 15.0  # a started worker silent this long no longer holds growth back


class Action(enum.Enum):
    GROW = "grow"
    RETIRE = "retire"


@dataclass(frozen=True)
class Slot:
    """What one worker last said, seen now."""

    name: str
    load: int  # requests in flight there (its own queue included)
    idle: float  # seconds without work (0 while busy)
    waiting: int  # requests waiting in its routers
    oldest: float  # the longest wait among them (s)
    age: float = 0.0  # seconds since it said so
    heard: float = 0.0  # how old the routers' word on waiting was when it said so


@dataclass(frozen=True)
class Limits:
    low: int
    high: int
    scale_up_wait: float
    idle_exit: float
    cooldown: float  # seconds between starts
    stale: float  # a slot older than this says nothing
    fresh: float = 1.5  # the routers' word on waiting older than this says nothing

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        interval = settings.heartbeat_interval
        return cls(settings.worker_count, settings.worker_max, settings.scale_up_wait,
                   settings.worker_idle_exit, cooldown=max(0.5, 2 * interval),
                   stale=max(1.0, settings.heartbeat_expiry),
                   fresh=max(1.0, 1.5 * interval + 0.25))


@dataclass(frozen=True)
class Decision:
    action: Action
    name: str = ""  # the worker to retire
    why: str = ""


def decide(slots: Sequence[Slot], size: int, starting: int, since_start: float,
           limits: Limits) -> Decision | None:
    """The pool's next step from the workers' last reports (pure: tested directly).
    ``size`` counts workers not retiring, ``starting`` those started but not yet heard."""
    fresh = [s for s in slots if s.age <= limits.stale]
    # routers heartbeat every interval: an older word on waiting may be over already
    pressed = [s for s in fresh if s.waiting > 0 and s.heard + s.age <= limits.fresh]
    if pressed:
        worst = max(pressed, key=lambda s: s.oldest)
        if (worst.oldest > limits.scale_up_wait and size < limits.high and not starting
                and since_start >= limits.cooldown and all(s.load > 0 for s in fresh)):
            return Decision(Action.GROW, why=f"{worst.waiting} waiting, oldest "
                                             f"{worst.oldest:.2f}s")
        return None
    if size <= limits.low:
        return None
    idle = [s for s in fresh if s.load == 0 and s.idle + s.age >= limits.idle_exit]
    if not idle:
        return None
    quiet = max(idle, key=lambda s: s.idle + s.age)
    return Decision(Action.RETIRE, quiet.name, f"idle {quiet.idle + quiet.age:.1f}s")


def _slot(name: str, report: dict[str, Any], age: float) -> Slot:
    def num(key: str) -> float:
        return reported_number(report.get(key))
    return Slot(name, int(num("load")), num("idle"), int(num("waiting")), num("oldest"), age,
                num("heard"))


class ElasticPool:
    """Grows and shrinks the supervisor's worker children (those with a load channel)."""

    def __init__(self, settings: Settings, make_child: Callable[[int], Child]) -> None:
        self.limits = Limits.of(settings)
        self.make_child = make_child
        self._next_index = settings.worker_count
        self._next_tick = 0.0
        self._started_at = -1e9
        self.grown = 0
        self.retired = 0

    def describe(self, size: int) -> str:
        return f"{size} workers (min {self.limits.low}, max {self.limits.high})"

    def tick(self, supervisor: Supervisor, now: float) -> None:
        if now < self._next_tick:
            return
        self._next_tick = now + TICK
        members = [c for c in supervisor.children if c.channel is not None and not c.retiring]
        slots, starting = [], 0
        for child in members:
            assert child.channel is not None
            child.channel.read(now)
            report = child.channel.last
            if report is not None and child.channel.at >= child.started:
                slots.append(_slot(child.name, report, now - child.channel.at))
            elif child.proc is not None and now - child.started < START_GRACE:
                starting += 1
        decision = decide(slots, len(members), starting, now - self._started_at, self.limits)
        if decision is None:
            return
        if decision.action is Action.GROW:
            child = self.make_child(self._next_index)
            self._next_index += 1
            self._started_at = now
            self.grown += 1
            supervisor.add(child)
            log.info("pool grows to %s: %s started (%s)", self.describe(len(members) + 1),
                     child.name, decision.why)
        else:
            child = next(c for c in members if c.name == decision.name)
            self.retired += 1
            supervisor.retire(child)
            log.info("pool shrinks to %s: %s stops (%s)", self.describe(len(members) - 1),
                     child.name, decision.why)
