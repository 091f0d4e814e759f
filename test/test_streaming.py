"""The newest-frame mailbox and rolling statistics behind the node's worker."""

from __future__ import annotations

import threading
import time

import pytest

from seg_perception.streaming import LatestSlot, RollingStats


def test_a_slow_consumer_gets_the_newest_frame_and_the_rest_count_as_dropped():
    slot: LatestSlot[int] = LatestSlot()
    for i in range(5):
        slot.put(i)
    assert slot.take(timeout=0.1) == 4
    assert (slot.received, slot.dropped) == (5, 4)
    assert slot.take(timeout=0.01) is None


def test_take_wakes_when_a_frame_arrives_and_close_releases_the_waiter():
    slot: LatestSlot[str] = LatestSlot()
    threading.Timer(0.05, slot.put, args=("frame",)).start()
    assert slot.take(timeout=2.0) == "frame"
    threading.Timer(0.05, slot.close).start()
    t0 = time.monotonic()
    assert slot.take(timeout=2.0) is None
    assert time.monotonic() - t0 < 1.0


def test_rate_and_percentiles_cover_only_the_window():
    stats = RollingStats(window=10.0)
    for i in range(11):  # 10 Hz for one second, values 0..10
        stats.add(float(i), now=100.0 + i * 0.1)
    assert stats.rate(now=101.0) == pytest.approx(10.0)
    assert stats.percentile(50, now=101.0) == pytest.approx(5.0)
    assert stats.rate(now=200.0) == 0.0  # all events aged out
    assert stats.percentile(50, now=200.0) != stats.percentile(50, now=200.0)  # NaN when empty
