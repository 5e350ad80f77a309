"""Routing decisions, the registry's slide->holders index and the wait queue (pure objects)."""

from __future__ import annotations

import itertools
import random

import pytest

from router.policy import (
    CacheAwarePolicy,
    LeastLoadedPolicy,
    RoundRobinPolicy,
    make_policy,
    rendezvous_score,
)
from router.registry import Registry, Removal, Task, WorkerState
from router.waiting import WaitQueue

_tids = itertools.count(1)


def task(slide: str | None, created: float | None = None) -> Task:
    tid = next(_tids)
    return Task(tid, b"gw", tid, {"op": "tile", "slide": slide}, slide, deadline=1e12,
                created=float(tid) if created is None else created)


def worker(name: str, capacity: int = 2, reported: tuple[str, ...] = ()) -> WorkerState:
    return WorkerState(name.encode(), capacity=capacity, reported=frozenset(reported))


def registry(*workers: WorkerState) -> Registry:
    reg = Registry()
    for w in workers:
        reg.add(w)
    return reg


def load(reg: Registry, w: WorkerState, n: int, slide: str = "other") -> list[Task]:
    """Put n requests of ``slide`` in flight on w."""
    tasks = [task(slide) for _ in range(n)]
    for t in tasks:
        reg.assign(w, t, now=0.0)
    return tasks


def assert_index_exact(reg: Registry) -> None:
    """The holders index equals what every worker's holds() says, with no empty entries."""
    expected: dict[str, set[bytes]] = {}
    for w in reg.workers.values():
        for s in w.holds():
            expected.setdefault(s, set()).add(w.identity)
    assert reg._holders == expected
    for s, ids in expected.items():
        assert {w.identity for w in reg.holders(s)} == ids


# --- cache-aware choose ------------------------------------------------------------------


def test_holder_with_room_beats_idle_non_holder() -> None:
    """Affinity first: a busier worker that has the slide open wins over an idle one."""
    holder, idle = worker("holder", reported=("s",)), worker("idle")
    reg = registry(idle, holder)
    load(reg, holder, 1)
    assert CacheAwarePolicy().choose(task("s"), reg) is holder


def test_least_loaded_holder() -> None:
    ws = [worker(f"w{i}", capacity=4, reported=("s",)) for i in range(3)]
    reg = registry(*ws, worker("idle"))
    for w, n in zip(ws, (2, 1, 3), strict=True):
        load(reg, w, n)
    assert CacheAwarePolicy().choose(task("s"), reg) is ws[1]


def test_in_flight_request_makes_a_holder() -> None:
    """A worker about to open a slide (request in flight, not yet reported) is a holder."""
    a, b = worker("a", capacity=4), worker("b")
    reg = registry(a, b)
    load(reg, a, 1, slide="s")
    assert CacheAwarePolicy().choose(task("s"), reg) is a


def test_full_holders_then_idle_worker_adopts_by_rendezvous() -> None:
    holder = worker("holder", capacity=1, reported=("s",))
    idles = [worker(f"idle{i}") for i in range(5)]
    reg = registry(holder, *idles)
    load(reg, holder, 1)
    policy = CacheAwarePolicy()
    chosen = policy.choose(task("s"), reg)
    assert chosen in idles
    assert chosen is max(idles, key=lambda w: rendezvous_score("s", w.identity))
    assert all(policy.choose(task("s"), reg) is chosen for _ in range(20))


def test_adoption_is_independent_of_worker_order() -> None:
    """The same worker adopts a slide whatever order workers registered in."""
    names = [f"w{i}" for i in range(5)]
    for slide in ("a.tiff", "sub/b.tiff", "c.svs"):
        picks = set()
        for perm in itertools.permutations(names):
            reg = registry(*(worker(n) for n in perm))
            chosen = CacheAwarePolicy().choose(task(slide), reg)
            assert chosen is not None
            picks.add(chosen.identity)
        assert len(picks) == 1, slide


def test_adoption_spreads_slides_over_idle_workers() -> None:
    """Rendezvous hashing must not send every new slide to the same idle worker."""
    reg = registry(*(worker(f"w{i}") for i in range(4)))
    policy = CacheAwarePolicy()
    chosen = {policy.choose(task(f"slide{i}.tiff"), reg).identity  # type: ignore[union-attr]
              for i in range(40)}
    assert len(chosen) >= 3


def test_no_holder_room_and_no_idle_worker_waits() -> None:
    """A busy non-holder with room is not used: the request waits for affinity."""
    holder = worker("holder", capacity=1, reported=("s",))
    busy = worker("busy", capacity=4)
    reg = registry(holder, busy)
    load(reg, holder, 1)
    load(reg, busy, 1)
    assert busy.has_room and not busy.idle
    assert CacheAwarePolicy().choose(task("s"), reg) is None


def test_slide_less_request_goes_to_an_idle_worker() -> None:
    a, b = worker("a"), worker("b")
    reg = registry(a, b)
    assert CacheAwarePolicy().choose(task(None), reg) in (a, b)
    load(reg, a, 1)
    load(reg, b, 1)
    assert CacheAwarePolicy().choose(task(None), reg) is None


def test_empty_registry() -> None:
    for name in ("cache-aware", "round-robin", "least-loaded"):
        assert make_policy(name).choose(task("s"), Registry()) is None


# --- cache-aware take --------------------------------------------------------------------


def test_take_prefers_held_slide_over_older_other_slide() -> None:
    w = worker("w", reported=("s",))
    q = WaitQueue()
    older_other, held1, held2 = task("x", 1.0), task("s", 1.1), task("s", 1.2)
    for t in (older_other, held1, held2):
        q.push(t)
    policy = CacheAwarePolicy(max_affinity_wait=1.0)  # all within it: affinity decides
    assert policy.take(w, q, now=5.0) is held1
    assert policy.take(w, q, now=5.0) is held2
    assert policy.take(w, q, now=5.0) is older_other  # nothing held waiting: oldest overall
    assert len(q) == 0 and policy.take(w, q, now=5.0) is None


def test_take_oldest_among_several_held_slides() -> None:
    w = worker("w", capacity=4, reported=("a", "b"))
    q = WaitQueue()
    ta, tb = task("a", 5.0), task("b", 4.0)
    q.push(ta)
    q.push(tb)
    assert CacheAwarePolicy().take(w, q, now=0.0) is tb


def test_idle_worker_with_no_held_work_takes_oldest() -> None:
    w = worker("w", reported=("s",))
    q = WaitQueue()
    first, second = task("x"), task("y")
    q.push(first)
    q.push(second)
    assert CacheAwarePolicy().take(w, q, now=0.0) is first and list(q) == [second]


def test_worker_with_room_prefers_its_slides_but_never_leaves_a_slot_empty() -> None:
    """A free slot takes the worker's own-slide work first; with none waiting it takes
    the oldest of any slide at once (an empty slot while work waits wasted 10% of the
    render throughput); foreign work jumps ahead only after max_affinity_wait more."""
    w = worker("w", capacity=3)
    reg = registry(w)
    load(reg, w, 1, slide="mine")
    policy = CacheAwarePolicy(max_affinity_wait=0.5)
    q = WaitQueue()
    theirs, mine = task("theirs", 10.0), task("mine", 10.3)
    q.push(theirs)
    q.push(mine)
    assert policy.take(w, q, now=10.4) is mine  # 0.3 s younger: affinity wins
    assert policy.take(w, q, now=10.4) is theirs and len(q) == 0  # nothing of its own
    older, own = task("theirs", 20.0), task("mine", 20.6)
    q.push(older)
    q.push(own)
    assert policy.take(w, q, now=21.0) is older  # waited 0.6 s longer than its own


def test_full_worker_takes_nothing() -> None:
    for policy in (CacheAwarePolicy(), RoundRobinPolicy(), LeastLoadedPolicy()):
        w = worker("w", capacity=1, reported=("s",))
        reg = registry(w)
        load(reg, w, 1, slide="s")
        q = WaitQueue()
        q.push(task("s"))
        assert policy.take(w, q) is None and len(q) == 1, policy.name


def test_fifo_policies_take_oldest() -> None:
    w = worker("w", reported=("b",))
    for policy in (RoundRobinPolicy(), LeastLoadedPolicy()):
        q = WaitQueue()
        first, second = task("a"), task("b")
        q.push(first)
        q.push(second)
        assert policy.take(w, q) is first, policy.name


# --- baseline policies -------------------------------------------------------------------


def test_round_robin_rotates_and_skips_full() -> None:
    ws = [worker(f"w{i}", capacity=10) for i in range(3)]
    reg = registry(*ws)
    rr = RoundRobinPolicy()
    assert [rr.choose(task("s"), reg) for _ in range(6)] == ws + ws
    full = worker("full", capacity=1)
    reg2 = registry(ws[0], full, ws[2])
    load(reg2, full, 1)
    rr2 = RoundRobinPolicy()
    assert [rr2.choose(task("s"), reg2) for _ in range(4)] == [ws[0], ws[2]] * 2


def test_least_loaded_picks_minimum_with_room() -> None:
    ws = [worker(f"w{i}", capacity=3) for i in range(3)]
    reg = registry(*ws)
    for w, n in zip(ws, (2, 0, 1), strict=True):
        load(reg, w, n)
    ll = LeastLoadedPolicy()
    assert ll.choose(task("s"), reg) is ws[1]
    load(reg, ws[1], 3)  # now full: excluded even though others are loaded
    assert ll.choose(task("s"), reg) is ws[2]
    load(reg, ws[0], 1)
    load(reg, ws[2], 2)
    assert ll.choose(task("s"), reg) is None


def test_make_policy_names() -> None:
    assert isinstance(make_policy("cache-aware"), CacheAwarePolicy)
    assert isinstance(make_policy("round-robin"), RoundRobinPolicy)
    assert isinstance(make_policy("least-loaded"), LeastLoadedPolicy)
    with pytest.raises(KeyError):
        make_policy("random")


# --- registry ----------------------------------------------------------------------------


def test_holders_index_through_lifecycle() -> None:
    w, other = worker("w", capacity=4), worker("other")
    reg = registry(w, other)
    t1 = task("s")
    reg.assign(w, t1, now=10.0)
    assert reg.holders("s") == [w]  # holds it before reporting it
    assert_index_exact(reg)
    assert reg.release(w, t1.tid, now=13.0) is t1 and t1.worker is None
    assert reg.holders("s") == [] and w.busy_seconds == 3.0
    assert_index_exact(reg)

    reg.set_reported(w, frozenset({"s", "t"}))
    assert reg.holders("s") == [w] and reg.holders("t") == [w]
    t2 = task("s")
    reg.assign(w, t2, now=20.0)
    reg.set_reported(w, frozenset({"t"}))  # closed it, but a request is still in flight
    assert reg.holders("s") == [w]
    assert_index_exact(reg)
    reg.release(w, t2.tid, now=21.0)
    assert reg.holders("s") == [] and reg.holders("t") == [w]
    assert_index_exact(reg)

    reg.assign(w, task("u"), now=30.0)
    removed = reg.remove(w.identity)
    assert removed is w and reg.get(w.identity) is None and len(reg) == 1
    assert reg.holders("t") == [] and reg.holders("u") == []
    assert reg._holders == {} and w.identity not in reg._held
    assert reg.remove(w.identity) is None


def test_release_unknown_tid_and_counters() -> None:
    w = worker("w", capacity=3)
    reg = registry(w)
    t1, t2 = task("s"), task("s")
    reg.assign(w, t1, now=1.0)
    reg.assign(w, t2, now=2.0)
    assert w.load == 2 and w.dispatched == 2 and w.busy_since == 1.0 and t1.worker == b"w"
    assert reg.release(w, 999_999, now=3.0) is None and w.load == 2
    reg.release(w, t1.tid, now=3.0)
    assert reg.holders("s") == [w]  # t2 still in flight
    reg.release(w, t2.tid, now=4.0)
    assert w.idle and w.busy_since is None and w.busy_seconds == 3.0
    assert reg.holders("s") == [] and not w.inflight_slides


def test_re_adding_a_worker_reindexes() -> None:
    """A worker that re-registers under the same identity replaces its old holdings."""
    reg = registry(worker("w", reported=("a", "b")))
    reg.add(worker("w", reported=("b", "c")))
    assert reg.holders("a") == [] and [x.identity for x in reg.holders("c")] == [b"w"]
    assert_index_exact(reg)


def test_holders_index_random_walk() -> None:
    """Thousands of random assign/release/report/remove/add steps keep the index exact."""
    rng = random.Random(1234)
    slides = ["a", "b", "c", "d", None]
    reg = Registry()
    names = [f"w{i}".encode() for i in range(4)]
    for step in range(3000):
        action = rng.random()
        if action < 0.1 or not reg.workers:
            ident = rng.choice(names)
            if reg.get(ident) is None:
                reg.add(WorkerState(ident, capacity=3,
                                    reported=frozenset(rng.sample("abcd", rng.randint(0, 2)))))
        else:
            w = rng.choice(list(reg.workers.values()))
            if action < 0.45 and w.has_room:
                reg.assign(w, task(rng.choice(slides)), now=float(step))
            elif action < 0.75 and w.inflight:
                reg.release(w, rng.choice(list(w.inflight)), now=float(step))
            elif action < 0.95:
                reg.set_reported(w, frozenset(rng.sample("abcd", rng.randint(0, 3))))
            else:
                reg.remove(w.identity)
        assert_index_exact(reg)
        for w in reg.workers.values():
            assert sum(w.inflight_slides.values()) == sum(
                1 for t in w.inflight.values() if t.slide is not None)


# --- wait queue --------------------------------------------------------------------------


def test_wait_queue_fifo_and_front() -> None:
    q = WaitQueue()
    a, b, c = task("x"), task("y"), task("x")
    for t in (a, b, c):
        q.push(t)
    retry = task("z", created=0.5)
    q.push(retry, front=True)
    assert list(q) == [retry, a, b, c] and len(q) == 4
    assert [q.pop_oldest() for _ in range(4)] == [retry, a, b, c]
    assert q.pop_oldest() is None and len(q) == 0


def test_front_push_is_first_for_its_slide() -> None:
    q = WaitQueue()
    a = task("s")
    q.push(a)
    retry = task("s", created=0.0)
    q.push(retry, front=True)
    assert q.pop_for_slides(["s"]) is retry and q.pop_for_slides(["s"]) is a


def test_pop_for_slides_oldest_head_and_removed() -> None:
    q = WaitQueue()
    x1, y1, z1, x2, y2 = (task(s, c) for s, c in
                          [("x", 1.0), ("y", 2.0), ("z", 0.5), ("x", 3.0), ("y", 4.0)])
    for t in (x1, y1, z1, x2, y2):
        q.push(t)
    assert q.pop_for_slides(["y", "x"]) is x1
    assert q.pop_for_slides(["y", "x"]) is y1
    assert q.pop_for_slides(["y", "x", "nope"]) is x2
    assert q.pop_for_slides(["nope"]) is None and q.pop_for_slides([]) is None
    assert list(q) == [z1, y2]
    assert q.pop_oldest() is z1 and q.pop_oldest() is y2 and q.pop_oldest() is None


def test_removed_task_is_never_returned() -> None:
    q = WaitQueue()
    a, b, c = task("s"), task("s"), task("s")
    for t in (a, b, c):
        q.push(t)
    q.remove(b)
    q.remove(b)  # idempotent
    assert len(q) == 2
    assert q.pop_for_slides(["s"]) is a and q.pop_for_slides(["s"]) is c
    assert q.pop_for_slides(["s"]) is None


@pytest.mark.parametrize("how", ["pop_oldest", "remove", "pop_for_slides", "mixed"])
def test_per_slide_index_does_not_grow(how: str) -> None:
    """After 10k tasks of distinct slides come and go, no per-slide deques are left over."""
    q = WaitQueue()
    tasks = [task(f"slide-{i}") for i in range(10_000)]
    for i, t in enumerate(tasks):
        q.push(t)
        if i % 100 == 99:  # drain in batches, as a router does
            batch = tasks[i - 99:i + 1]
            for j, b in enumerate(batch):
                mode = how if how != "mixed" else ("pop_oldest", "remove",
                                                   "pop_for_slides")[j % 3]
                if mode == "pop_oldest":
                    assert q.pop_oldest() is not None
                elif mode == "remove":
                    q.remove(b)
                else:
                    assert q.pop_for_slides([b.slide]) is b  # type: ignore[list-item]
            assert len(q._by_slide) <= 100
    assert len(q) == 0 and len(q._by_slide) == 0


def test_cache_aware_take_bounds_how_long_affinity_may_make_a_request_wait() -> None:
    """A request for a slide nobody holds must not starve behind a hot slide: once the
    oldest waiting request has waited max_affinity_wait longer than the freed worker's
    own oldest, that slot takes it; a deep backlog of the same age keeps affinity."""
    policy = CacheAwarePolicy(max_affinity_wait=0.2)
    reg = Registry()
    busy = WorkerState(b"w1", capacity=2)
    reg.add(busy)
    reg.set_reported(busy, frozenset({"hot"}))
    reg.assign(busy, Task(99, b"g", 99, {}, "hot", 1e9), now=0.0)  # has room, not idle
    q = WaitQueue()
    cold = Task(1, b"g", 1, {}, "cold", 1e9, created=100.0)
    hot = Task(2, b"g", 2, {}, "hot", 1e9, created=100.1)
    q.push(cold)
    q.push(hot)
    assert policy.take(busy, q, now=105.0) is hot  # both old, 0.1 s apart: affinity first
    later = Task(3, b"g", 3, {}, "hot", 1e9, created=100.25)
    q.push(later)
    assert policy.take(busy, q, now=105.0) is cold  # 0.25 s older than its own: cold next


def test_equally_loaded_holders_split_a_slide_by_tile_neighbourhood() -> None:
    """A slide held by two idle workers: each 4x4 neighbourhood of tiles always goes to
    the same one (so repeats and prefetched neighbours hit its cache), and the
    neighbourhoods are shared out between them."""
    a, b = worker("a", reported=("s",)), worker("b", reported=("s",))
    reg = registry(a, b)
    for w in (a, b):
        reg.set_reported(w, frozenset({"s"}))
    policy = CacheAwarePolicy()

    def tile(col: int, row: int) -> Task:
        t = task("s")
        t.request.update(level=12, col=col, row=row)
        return t

    owners = {}
    for col in range(0, 40, 4):
        for row in range(0, 40, 4):
            owner = policy.choose(tile(col, row), reg)
            assert owner is policy.choose(tile(col + 3, row + 3), reg)  # same neighbourhood
            owners[(col, row)] = owner
    assert set(owners.values()) == {a, b}
    load(reg, a, 1, slide="s")  # unequal load: the least loaded holder wins regardless
    assert all(policy.choose(tile(c, r), reg) is b for c, r in owners)


def test_affinity_bound_follows_what_opening_a_slide_costs() -> None:
    """Slow (remote) opens stretch the cache-aware affinity bound; cheap ones leave it."""
    policy = CacheAwarePolicy(max_affinity_wait=0.1)
    reg = Registry()
    a, b = WorkerState(b"a", capacity=2), WorkerState(b"b", capacity=2)
    reg.add(a)
    reg.add(b)
    policy.adapt(reg)
    assert policy.max_affinity_wait == 0.1  # nothing opened yet
    a.update({"opens": 8, "open_s": 0.04}, 64)  # local disk: 5 ms an open
    b.update({"opens": 2, "open_s": 0.01}, 64)
    policy.adapt(reg)
    assert policy.max_affinity_wait == 0.1
    a.update({"opens": 10, "open_s": 1.6}, 64)  # a remote store: 0.16 s an open
    b.update({"opens": 10, "open_s": 1.6}, 64)
    policy.adapt(reg)
    assert policy.max_affinity_wait == pytest.approx(0.8)
    a.update({"opens": 1, "open_s": 9.0}, 64)
    policy.adapt(reg)
    assert policy.max_affinity_wait == 2.0  # capped
    a.update({"open_s": True}, 64)  # a wrong type keeps the last value
    assert a.open_seconds == 9.0


def test_silent_workers_one_by_one_are_silent_all_at_once_cut_off() -> None:
    """One worker past its expiry while another still talks: SILENT (its task may count
    as a crash). Every worker silent together (a network cut, a stalled router): all go
    at once as CUT_OFF, which counts no crash. A lone worker is never judged cut off."""
    a, b = worker("a"), worker("b")
    reg = registry(a, b)
    a.expiry, b.expiry = 9.9, 12.5  # now = 10, expiry 3: b heard 0.5 s ago
    assert reg.silent(10.0, 3.0) == [(a, Removal.SILENT)]
    b.expiry = 10.8  # b silent 2.2 s too
    assert reg.silent(10.0, 3.0) == [(a, Removal.CUT_OFF), (b, Removal.CUT_OFF)]
    assert reg.silent(9.5, 3.0) == []  # nobody expired yet
    assert registry(a).silent(10.0, 3.0) == [(a, Removal.SILENT)]
    # all silent together, but each one's oldest work was the same slide: that slide may
    # have killed them all (spread over every worker), so they count as SILENT
    other = task("y")  # made first: the oldest task of all
    bad_a, later, bad_b = task("bad"), task("x"), task("bad")
    a.inflight = {bad_a.tid: bad_a, later.tid: later}
    b.inflight = {bad_b.tid: bad_b}
    assert reg.silent(10.0, 3.0) == [(a, Removal.SILENT)]
    b.inflight[other.tid] = other  # b's oldest work is another slide: a cut after all
    assert reg.silent(10.0, 3.0) == [(a, Removal.CUT_OFF), (b, Removal.CUT_OFF)]
