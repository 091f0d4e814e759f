"""Frame hand-off and rolling statistics for a camera faster than its model.

ROS-free so the node's latency behaviour is testable without DDS.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Generic, TypeVar

import numpy as np

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """A one-item mailbox: ``put`` replaces what is waiting, ``take`` blocks for it.

    Keeping only the newest frame bounds latency to about one inference period
    when the camera outpaces the model; every replaced frame is counted as dropped.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._closed = False
        self.dropped = 0
        self.received = 0

    def put(self, item: T) -> None:
        with self._cond:
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self.received += 1
            self._cond.notify()

    def take(self, timeout: float | None = None) -> T | None:
        """The newest item, or None on timeout or after ``close``."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._item is not None or self._closed, timeout):
                return None
            item, self._item = self._item, None
            self._cond.notify_all()  # a waiting ``HandOff.put``
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._item = None
            self._cond.notify_all()

    def reopen(self) -> None:
        with self._cond:
            self._closed = False


class HandOff(LatestSlot[T]):
    """A one-item queue between two pipeline stages: ``put`` waits while it is full.

    Unlike ``LatestSlot`` nothing handed over is replaced (a computed result is never
    thrown away), and the producer is never more than one item ahead of the consumer.
    """

    def put(self, item: T) -> bool:  # type: ignore[override]
        """Hand ``item`` over once the previous one is taken; False if closed meanwhile."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is None or self._closed)
            if self._closed:
                return False
            self._item = item
            self.received += 1
            self._cond.notify_all()
            return True


class RollingStats:
    """Event rate and value percentiles over a sliding time window (seconds)."""

    def __init__(self, window: float = 10.0, maxlen: int = 4096) -> None:
        self.window = window
        self._events: deque[tuple[float, float]] = deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self.total = 0

    def add(self, value: float = 0.0, now: float | None = None) -> None:
        with self._lock:
            self._events.append((time.monotonic() if now is None else now, value))
            self.total += 1

    def _recent(self, now: float | None) -> list[tuple[float, float]]:
        now = time.monotonic() if now is None else now
        with self._lock:
            while self._events and self._events[0][0] < now - self.window:
                self._events.popleft()
            return list(self._events)

    def rate(self, now: float | None = None) -> float:
        """Events per second over the window (0 with fewer than two events)."""
        events = self._recent(now)
        if len(events) < 2:
            return 0.0
        span = events[-1][0] - events[0][0]
        return (len(events) - 1) / span if span > 0 else 0.0

    def percentile(self, q: float, now: float | None = None) -> float:
        """The q-th percentile (0-100) of the values in the window; NaN if empty."""
        events = self._recent(now)
        if not events:
            return float("nan")
        return float(np.percentile([v for _, v in events], q))
