"""Requests waiting for a worker: FIFO overall, and by slide for affinity pick-up.

``pop_for_slides`` is O(slides asked about), not O(queue): each slide keeps a deque
of task ids; ids already taken are skipped lazily.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import Any

from router.registry import Task


class WaitQueue:
    def __init__(self) -> None:
        self._order: OrderedDict[int, Task] = OrderedDict()
        self._by_slide: dict[str | None, deque[int]] = {}

    def __len__(self) -> int:
        return len(self._order)

    def __iter__(self):
        return iter(list(self._order.values()))

    def push(self, task: Task, front: bool = False) -> None:
        self._order[task.tid] = task
        ids = self._by_slide.setdefault(task.slide, deque())
        if front:
            self._order.move_to_end(task.tid, last=False)
            ids.appendleft(task.tid)
        else:
            ids.append(task.tid)

    def remove(self, task: Task) -> None:
        self._order.pop(task.tid, None)
        self._head(task.slide)  # drop stale ids at the front of its slide's deque

    def pressure(self) -> dict[str, Any]:
        """What the router's heartbeats tell workers: requests waiting here and the oldest
        one's wait (s). Workers pass it to their launcher, which grows an elastic pool when
        requests wait too long (workers/elastic.py)."""
        oldest = self.peek_oldest()
        if oldest is None:
            return {"waiting": 0, "oldest": 0.0}
        return {"waiting": len(self._order),
                "oldest": round(time.monotonic() - oldest.created, 3)}

    def peek_oldest(self) -> Task | None:
        return next(iter(self._order.values()), None)

    def pop_oldest(self) -> Task | None:
        if not self._order:
            return None
        _, task = self._order.popitem(last=False)
        self._head(task.slide)
        return task

    def peek_for_slides(self, slides: Iterable[str]) -> Task | None:
        """The oldest waiting task for any of ``slides`` (left in the queue)."""
        best: Task | None = None
        for slide in slides:
            head = self._head(slide)
            if head is not None and (best is None or head.created < best.created):
                best = head
        return best

    def pop_for_slides(self, slides: Iterable[str]) -> Task | None:
        """The oldest waiting task for any of ``slides``, removed from the queue."""
        best = self.peek_for_slides(slides)
        if best is not None:
            self.remove(best)
        return best

    def _head(self, slide: str | None) -> Task | None:
        ids = self._by_slide.get(slide)
        while ids:
            task = self._order.get(ids[0])
            if task is not None:
                return task
            ids.popleft()
        if ids is not None:
            del self._by_slide[slide]
        return None
