"""The node's QoS matching and diagnostics without DDS (no rclpy.init, no node): the rules the
DDS tests exercise end to end, checked one by one."""

from __future__ import annotations

import pytest

from conftest import ros_available

if ros_available() is None:
    from rclpy.qos import QoSReliabilityPolicy as R

    from seg_perception.ros import qos
    from seg_perception.ros.diagnostics import ERROR, OK, WARN, ProblemBook, build_status

pytestmark = pytest.mark.ros


@pytest.fixture(autouse=True)
def _needs_rclpy():
    reason = ros_available()
    if reason:
        pytest.skip(reason)


def test_auto_reliability_matches_what_the_publishers_offer():
    assert qos.choose_reliability("auto", []) == R.RELIABLE  # nobody yet: reliable, for camera-sized frames
    assert qos.choose_reliability("auto", [R.RELIABLE, R.RELIABLE]) == R.RELIABLE
    assert qos.choose_reliability("auto", [R.RELIABLE, R.BEST_EFFORT]) == R.BEST_EFFORT  # matches any writer
    assert qos.choose_reliability("best_effort", [R.RELIABLE]) == R.BEST_EFFORT  # forced
    assert qos.choose_reliability("reliable", [R.BEST_EFFORT]) == R.RELIABLE
    profile = qos.input_qos(R.BEST_EFFORT, 3)
    assert profile.reliability == R.BEST_EFFORT and profile.depth == 3


def test_the_subscription_is_rematched_only_in_auto_and_only_when_the_choice_changes():
    assert qos.rematch("auto", R.RELIABLE, [R.BEST_EFFORT]) == R.BEST_EFFORT
    assert qos.rematch("auto", R.BEST_EFFORT, [R.RELIABLE]) == R.RELIABLE
    assert qos.rematch("auto", R.RELIABLE, [R.RELIABLE]) is None
    assert qos.rematch("auto", R.BEST_EFFORT, []) is None  # the camera went away: keep what works
    assert qos.rematch("reliable", R.RELIABLE, [R.BEST_EFFORT]) is None  # forced: the user decides
    assert qos.reliability_name(R.BEST_EFFORT) == "best_effort"


def test_a_repeated_problem_is_logged_once_per_throttle_period_with_the_count():
    book = ProblemBook(throttle=5.0, hold=10.0)
    assert book.report("input", WARN, "dropped a frame of 640x480", now=0.0) == "dropped a frame of 640x480"
    assert book.report("input", WARN, "dropped a frame of 320x240", now=1.0) is None  # same shape, numbers aside
    assert book.report("qos", ERROR, "incompatible QoS", now=1.5) == "incompatible QoS"  # a new kind: logged
    assert book.report("input", WARN, "dropped a frame of 640x480", now=6.0) == \
        "dropped a frame of 640x480 (1 more since the last report)"
    assert book.total == 4
    assert [k for k, _ in book.active(now=7.0)] == ["qos", "input"]  # worst first
    assert [k for k, _ in book.active(now=12.0)] == ["input"]  # qos last seen 10.5 s ago
    book.clear("input")
    assert book.active(now=12.0) == []


def test_the_status_carries_the_worst_problem_and_every_value():
    book = ProblemBook()
    book.report("depth", WARN, "no depth", now=0.0)
    book.report("model", ERROR, "cannot load the model", now=0.0)
    status = build_status("node: segmentation", "seg_perception", book.active(now=0.0),
                          {"state": "configured", "frames_received": "3"}, OK, "configured")
    assert status.level == bytes([ERROR]) and status.message == "cannot load the model"
    values = {kv.key: kv.value for kv in status.values}
    assert values["state"] == "configured" and values["frames_received"] == "3"
    assert values["problem.model"] == "ERROR: cannot load the model" and values["problem.depth"] == "WARN: no depth"
    healthy = build_status("node: segmentation", "seg_perception", [], {"state": "active"}, OK, "running")
    assert healthy.level == bytes([OK]) and healthy.message == "running"
