"""Frame hand-off and rolling statistics for a camera faster than its model.

ROS-free so the node's latency behaviour is testable without DDS.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable, Generic, Sequence, TypeVar

import numpy as np

T = TypeVar("T")
U = TypeVar("U")


class _Mailbox(Generic[T]):
    """One item between two threads: ``take`` blocks for it, ``close`` wakes everyone.
    What ``put`` does with an item already waiting is the subclass's choice."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._closed = False
        self.received = 0

    def take(self, timeout: float | None = None) -> T | None:
        """The waiting item, or None on timeout or after ``close``."""
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


class HandOff(_Mailbox[T]):
    """A one-item queue between two pipeline stages: ``put`` waits while it is full.

    Unlike ``CameraSlots`` nothing handed over is replaced (a computed result is never
    thrown away), and the producer is never more than one item ahead of the consumer.
    """

    def put(self, item: T) -> bool:
        """Hand ``item`` over once the previous one is taken; False if closed meanwhile."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is None or self._closed)
            if self._closed:
                return False
            self._item = item
            self.received += 1
            self._cond.notify_all()
            return True


class CameraSlots(Generic[T]):
    """A newest-item slot per camera: ``put`` replaces that camera's waiting item (counted
    as dropped), ``take_batch`` blocks until any camera has one and then takes every
    camera's waiting item at once.

    Taking all cameras' newest frames together is what makes the schedule fair: a camera
    publishing at 60 Hz cannot push a 10 Hz camera's frame out of the batch, each camera
    is served at min(its rate, the batch rate), and each frame waits at most one batch.
    """

    def __init__(self, cameras: Sequence[str]) -> None:
        self.cameras = list(cameras)
        self._cond = threading.Condition()
        self._items: dict[str, T] = {}
        self._closed = False
        self.received = {c: 0 for c in self.cameras}
        self.dropped = {c: 0 for c in self.cameras}

    def put(self, camera: str, item: T) -> None:
        with self._cond:
            if camera in self._items:
                self.dropped[camera] += 1
            self._items[camera] = item
            self.received[camera] += 1
            self._cond.notify()

    def take_batch(self, timeout: float | None = None) -> list[tuple[str, T]]:
        """Every camera's waiting item, in ``cameras`` order; [] on timeout or after ``close``."""
        with self._cond:
            if not self._cond.wait_for(lambda: bool(self._items) or self._closed, timeout) or self._closed:
                return []
            batch = [(c, self._items.pop(c)) for c in self.cameras if c in self._items]
            return batch

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._items.clear()
            self._cond.notify_all()


class TwoStageWorkers(Generic[T, U]):
    """Two threads: ``first`` takes a batch of every camera's newest item (``CameraSlots``:
    older ones are dropped and counted) and returns the results to finish; ``second``
    finishes each of them (``HandOff``: in order, nothing dropped), so the first stage of
    one batch overlaps the second stage of the previous one. The node runs the network
    (one batch for all cameras) in the first stage and post-processing and publishing in
    the second. With one camera a batch is that camera's newest frame.

    An exception in a stage goes to ``on_error`` and the next item is processed: one bad
    item never stops the threads, and in the second stage one camera's failure does not
    keep the batch's other results from being finished. ``wake`` (on ``stop``) interrupts
    whatever a stage may be waiting on besides the mailboxes.
    """

    def __init__(self, cameras: Sequence[str], first: Callable[[list[tuple[str, T]]], list[U]],
                 second: Callable[[U], None], on_error: Callable[[Exception], None],
                 names: tuple[str, str] = ("first", "second"), wake: Callable[[], None] | None = None) -> None:
        self._cameras = list(cameras)
        self._first, self._second, self._on_error = first, second, on_error
        self._names = names
        self._wake = wake
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.slots: CameraSlots[T] = CameraSlots(self._cameras)
        self.handoff: HandOff[list[U]] = HandOff()
        self.batches = 0
        self.batched_frames = 0

    @property
    def running(self) -> bool:
        return bool(self._threads)

    def put(self, camera: str, item: T) -> None:
        self.slots.put(camera, item)

    def start(self) -> None:
        self._stop.clear()
        self.slots, self.handoff = CameraSlots(self._cameras), HandOff()
        self._threads = [threading.Thread(target=self._run_first, name=self._names[0], daemon=True),
                         threading.Thread(target=self._run_second, name=self._names[1], daemon=True)]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.slots.close()
        self.handoff.close()
        if self._wake is not None:
            self._wake()
        for thread in self._threads:
            thread.join(timeout=timeout)
        self._threads = []

    def _run_first(self) -> None:
        self._loop(lambda: self.slots.take_batch(timeout=0.2) or None, self._infer_batch, self.handoff.put)

    def _run_second(self) -> None:
        self._loop(lambda: self.handoff.take(timeout=0.2), self._finish_each, None)

    def _infer_batch(self, batch: list[tuple[str, T]]) -> list[U] | None:
        self.batches += 1
        self.batched_frames += len(batch)
        return self._first(batch) or None

    def _finish_each(self, results: list[U]) -> None:
        for result in results:
            try:
                self._second(result)
            except Exception as exc:  # one camera's failure must not keep the batch's others from being finished
                self._on_error(exc)

    def _loop(self, take: Callable[[], Any], work: Callable[[Any], Any], then: Callable[[Any], Any] | None) -> None:
        while not self._stop.is_set():
            item = take()
            if item is None:
                continue
            try:
                result = work(item)
            except Exception as exc:  # never let one item stop the thread
                self._on_error(exc)
                continue
            if then is not None and result is not None:
                then(result)


class StageTimes:
    """Rolling per-stage durations of the frame path (seconds), for /diagnostics and the bench.

    ``add(stage, seconds)`` per frame; ``values()`` gives ``stage_<name>_p50_ms`` and
    ``_p95_ms`` for every stage seen, in the order first seen.
    """

    def __init__(self, window: float = 10.0) -> None:
        self._window = window
        self._stages: dict[str, RollingStats] = {}
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            stats = self._stages.get(stage)
            if stats is None:
                stats = self._stages[stage] = RollingStats(self._window)
        stats.add(seconds)

    def percentiles(self, q: float) -> dict[str, float]:
        """{stage: q-th percentile in seconds} (NaN for a stage without recent frames)."""
        with self._lock:
            stages = dict(self._stages)
        return {name: stats.percentile(q) for name, stats in stages.items()}

    def values(self) -> dict[str, str]:
        p50, p95 = self.percentiles(50), self.percentiles(95)
        out = {}
        for name in p50:
            out[f"stage_{name}_p50_ms"] = f"{p50[name] * 1e3:.2f}"
            out[f"stage_{name}_p95_ms"] = f"{p95[name] * 1e3:.2f}"
        return out


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


class SequenceGaps:
    """Messages a topic's publishers sent that never arrived, from publication sequence numbers.

    Each DDS writer numbers its samples 1, 2, 3, ...; a reader that receives 7 after 4
    from the same writer lost 5 and 6 on the way (a best-effort reader of fragmented
    camera frames over UDP loses many). Counted per publisher (``gid``), so two cameras'
    publishers on one topic, or a restarted camera (its numbers start again), do not
    look like loss. ``known`` stays False until a sequence number arrives (Humble's rclpy
    and some RMWs give none).
    """

    def __init__(self) -> None:
        self._last: dict[Any, int] = {}
        self._lock = threading.Lock()
        self.sent = 0  # messages the publishers sent since we first heard each (arrived or not)
        self.lost = 0
        self.known = False
        self._checked = (0, 0)

    def add(self, gid: Any, sequence: int | None) -> None:
        if sequence is None or sequence <= 0:  # RMWs without the feature report 0 or nothing
            return
        key = bytes(gid.get("data", b"")) if isinstance(gid, dict) else gid
        key = key if isinstance(key, (bytes, str, int, tuple)) else repr(key)
        with self._lock:
            self.known = True
            last = self._last.get(key)
            self._last[key] = int(sequence)
            if last is None or sequence <= last:  # first message of this publisher, or it restarted
                self.sent += 1
                return
            self.sent += int(sequence) - last
            self.lost += int(sequence) - last - 1

    def since_last_check(self) -> tuple[int, int]:
        """(sent, lost) since the previous call."""
        with self._lock:
            sent, lost = self.sent - self._checked[0], self.lost - self._checked[1]
            self._checked = (self.sent, self.lost)
        return sent, lost
