"""The newest-frame mailbox, the stage hand-off and rolling statistics behind the node's workers."""

from __future__ import annotations

import threading
import time

import pytest

from seg_perception.streaming import CameraSlots, HandOff, RollingStats


def test_a_slow_consumer_gets_the_newest_frame_and_the_rest_count_as_dropped():
    slot: CameraSlots[int] = CameraSlots([""])
    for i in range(5):
        slot.put("", i)
    assert slot.take_batch(timeout=0.1) == [("", 4)]
    assert (slot.received[""], slot.dropped[""]) == (5, 4)
    assert slot.take_batch(timeout=0.01) == []


def test_take_wakes_when_a_frame_arrives_and_close_releases_the_waiter():
    slot: CameraSlots[str] = CameraSlots([""])
    threading.Timer(0.05, slot.put, args=("", "frame")).start()
    assert slot.take_batch(timeout=2.0) == [("", "frame")]
    threading.Timer(0.05, slot.close).start()
    t0 = time.monotonic()
    assert slot.take_batch(timeout=2.0) == []
    assert time.monotonic() - t0 < 1.0


def test_the_hand_off_keeps_every_item_in_order_and_holds_the_producer_one_item_ahead():
    hand: HandOff[int] = HandOff()
    produced: list[int] = []

    def produce() -> None:
        for i in range(20):
            assert hand.put(i)
            produced.append(i)

    producer = threading.Thread(target=produce)
    producer.start()
    taken = []
    while len(taken) < 20:
        time.sleep(0.002)
        # Never more than the item waiting plus the one being put ahead of the consumer.
        assert len(produced) - len(taken) <= 2
        item = hand.take(timeout=1.0)
        assert item is not None
        taken.append(item)
    producer.join(timeout=2.0)
    assert taken == list(range(20))


def test_close_releases_a_blocked_producer_and_a_waiting_consumer():
    hand: HandOff[str] = HandOff()
    assert hand.put("first")
    result: list[bool] = []
    producer = threading.Thread(target=lambda: result.append(hand.put("second")))
    producer.start()
    time.sleep(0.05)
    assert producer.is_alive()  # full: put waits
    hand.close()
    producer.join(timeout=1.0)
    assert result == [False]
    assert hand.take(timeout=0.5) is None


def test_rate_and_percentiles_cover_only_the_window():
    stats = RollingStats(window=10.0)
    for i in range(11):  # 10 Hz for one second, values 0..10
        stats.add(float(i), now=100.0 + i * 0.1)
    assert stats.rate(now=101.0) == pytest.approx(10.0)
    assert stats.percentile(50, now=101.0) == pytest.approx(5.0)
    assert stats.rate(now=200.0) == 0.0  # all events aged out
    assert stats.percentile(50, now=200.0) != stats.percentile(50, now=200.0)  # NaN when empty
