"""Elastic pools: ``--workers MIN:MAX`` parsing, the launcher's decision (a pure function
of what the workers last reported) and the report pipe between worker and launcher."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from config.errors import ConfigError
from config.settings import Settings, load_settings
from tests.helpers import wait_for
from workers.elastic import Action, Limits, Slot, decide
from workers.launcher import Child, Supervisor
from workers.load_report import ENV, LoadChannel, LoadReport

LIMITS = Limits(low=1, high=4, scale_up_wait=0.2, idle_exit=30.0, cooldown=2.0, stale=3.0,
                fresh=1.5)


def busy(name: str, waiting: int = 0, oldest: float = 0.0, age: float = 0.1,
         heard: float = 0.3) -> Slot:
    return Slot(name, load=2, idle=0.0, waiting=waiting, oldest=oldest, age=age, heard=heard)


def idle(name: str, for_s: float, age: float = 0.1) -> Slot:
    return Slot(name, load=0, idle=for_s, waiting=0, oldest=0.0, age=age)


# --- settings -----------------------------------------------------------------------------

def test_min_max_sets_both_fields_and_a_plain_number_stays_fixed() -> None:
    s = load_settings({"workers": "1:4"}, env={})
    assert (s.workers, s.workers_max, s.worker_count, s.worker_max) == (1, 4, 1, 4)
    fixed = load_settings({"workers": "3"}, env={})
    assert (fixed.worker_count, fixed.worker_max) == (3, 3)
    # a later source's plain N means a fixed pool again; children reload MIN:MAX from env
    assert load_settings({"workers": "2"}, env={"TILEROUTER_WORKERS": "1:4"}).worker_max == 2
    child = load_settings({}, env=s.to_env())
    assert (child.worker_count, child.worker_max) == (1, 4)


def test_min_max_from_a_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "tilerouter.toml"
    path.write_text('workers = "2:5"\nworker_idle_exit = 10\n')
    s = load_settings({}, env={}, config_file=str(path))
    assert (s.worker_count, s.worker_max, s.worker_idle_exit) == (2, 5, 10.0)


@pytest.mark.parametrize("bad", ["0:4", "4:2", "a:b", "1:", ":3", "1:2:3"])
def test_bad_ranges_fail_naming_the_setting(bad: str) -> None:
    with pytest.raises(ConfigError, match="setting 'workers'"):
        load_settings({"workers": bad}, env={})


def test_max_below_min_and_bad_bounds_fail() -> None:
    with pytest.raises(ConfigError, match="workers_max"):
        Settings(workers=3, workers_max=2)
    with pytest.raises(ConfigError, match="scale_up_wait"):
        Settings(scale_up_wait=0)
    with pytest.raises(ConfigError, match="worker_idle_exit"):
        Settings(worker_idle_exit=-1)


# --- decide -------------------------------------------------------------------------------

def test_grows_when_a_request_waits_too_long_and_no_worker_is_idle() -> None:
    d = decide([busy("w0", waiting=9, oldest=0.5)], 1, 0, 10.0, LIMITS)
    assert d is not None and d.action is Action.GROW and "9 waiting" in d.why


@pytest.mark.parametrize(("slots", "size", "starting", "since"), [
    ([busy("w0", waiting=9, oldest=0.1)], 1, 0, 10.0),  # wait within the bound
    ([busy("w0", waiting=9, oldest=0.5), idle("w1", 0.0)], 2, 0, 10.0),  # one is idle
    ([busy("w0", waiting=9, oldest=0.5)], 2, 1, 10.0),  # one still starting
    ([busy("w0", waiting=9, oldest=0.5)], 1, 0, 1.0),  # within the cooldown
    ([busy(f"w{i}", waiting=9, oldest=0.5) for i in range(4)], 4, 0, 10.0),  # at MAX
    ([busy("w0", waiting=9, oldest=0.5, age=5.0)], 1, 0, 10.0),  # stale report
    ([busy("w0", waiting=9, oldest=0.5, heard=1.45)], 1, 0, 10.0),  # stale router word
])
def test_does_not_grow(slots: list[Slot], size: int, starting: int, since: float) -> None:
    assert decide(slots, size, starting, since, LIMITS) is None


def test_retires_the_longest_idle_worker_beyond_min() -> None:
    slots = [busy("w0"), idle("w1", 31.0), idle("w2", 40.0), idle("w3", 5.0)]
    d = decide(slots, 4, 0, 100.0, LIMITS)
    assert d is not None and d.action is Action.RETIRE and d.name == "w2"


def test_idle_time_counts_the_report_age() -> None:
    d = decide([busy("w0"), idle("w1", 29.5, age=1.0)], 2, 0, 100.0, LIMITS)
    assert d is not None and d.name == "w1"


@pytest.mark.parametrize(("slots", "size"), [
    ([idle("w0", 100.0)], 1),  # at MIN
    ([busy("w0", waiting=1, oldest=0.01), idle("w1", 100.0)], 2),  # requests wait
    ([busy("w0"), idle("w1", 10.0)], 2),  # not idle long enough
    ([busy("w0"), idle("w1", 100.0, age=5.0)], 2),  # stale: may be busy by now
])
def test_does_not_retire(slots: list[Slot], size: int) -> None:
    assert decide(slots, size, 0, 100.0, LIMITS) is None


def test_limits_follow_the_settings() -> None:
    limits = Limits.of(Settings(workers=2, workers_max=6, heartbeat_interval=0.5,
                                scale_up_wait=0.3, worker_idle_exit=12))
    assert (limits.low, limits.high, limits.scale_up_wait, limits.idle_exit) == (2, 6, 0.3, 12)
    assert limits.cooldown >= 2 * 0.5  # the routers' view lags a heartbeat


# --- the report pipe ----------------------------------------------------------------------

def test_report_travels_the_pipe_newest_line_wins() -> None:
    channel = LoadChannel()
    env = channel.open()
    report = LoadReport(int(env[ENV]), stale_after=3.0)  # the worker's end (same process)
    try:
        channel.read(time.monotonic())
        assert channel.last is None
        report.router_said("ipc://r1", {"waiting": 4, "oldest": 0.7})
        report.router_said("ipc://r2", {"waiting": 2, "oldest": 0.2})
        report.write(load=1, served=5)
        report.write(load=2, served=6)
        channel.read(time.monotonic())
        heard = channel.last.pop("heard") if channel.last else None
        assert channel.last == {"load": 2, "idle": 0.0, "waiting": 6, "oldest": 0.7}
        assert heard is not None and 0 <= heard < 3.0
        report.router_said("ipc://r1", {"waiting": "x", "oldest": -1})  # untrusted values
        report.write(load=0, served=6)
        channel.read(time.monotonic())
        assert channel.last is not None
        assert (channel.last["waiting"], channel.last["oldest"]) == (2, 0.2)
        assert channel.last["load"] == 0 and channel.last["idle"] >= 0
    finally:
        report.close()
        channel.close()


def test_a_full_pipe_never_blocks_the_worker() -> None:
    channel = LoadChannel()
    report = LoadReport(int(channel.open()[ENV]), stale_after=3.0)
    try:
        for served in range(20000):  # ~50 bytes a line: several times a pipe's buffer
            report.write(load=1, served=served)
        channel.read(time.monotonic())
        assert channel.last is not None and channel.last["load"] == 1
    finally:
        report.close()
        channel.close()


def test_no_pipe_no_report(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    report = LoadReport.from_env(3.0)
    assert report.fd is None
    report.router_said("ipc://r", {"waiting": 1})
    report.write(1, 1)  # nothing to write to, nothing raised
    assert os.environ.get(ENV) is None


# --- the supervisor's side: a retired child is not restarted --------------------------------

def test_a_retired_child_leaves_and_a_crashed_one_comes_back() -> None:
    env = dict(os.environ)
    retired = Child("retired", ["sleep", "30"], env, channel=LoadChannel())
    crashing = Child("crashing", ["sh", "-c", "exit 3"], env)
    sup = Supervisor([retired, crashing])
    sup.start()
    try:
        assert retired.proc is not None and retired.channel is not None
        sup.retire(retired)
        wait_for(lambda: (sup.poll(), retired not in sup.children)[1], 10,
                 what="the retired child reaped and dropped")
        assert retired.exits == [-15] and retired.restarts == 0
        wait_for(lambda: (sup.poll(), crashing.restarts >= 1)[1], 10,
                 what="the crashed child restarted")
        assert sup.children == [crashing]
    finally:
        sup.stop(timeout=5)
