"""ROS time stamps as integer nanoseconds, the one unit stamps are compared in.

Works on any stamp with ``sec`` and ``nanosec`` (rclpy's ``builtin_interfaces/Time``,
a rosbags typestore's ``Time``), so the node, the bag readers and the tools agree to
the nanosecond. No ROS imports.
"""

from __future__ import annotations

from typing import Any

NS_PER_SEC = 1_000_000_000


def stamp_ns(stamp: Any) -> int:
    """Nanoseconds of a header stamp (``msg.header.stamp``)."""
    return int(stamp.sec) * NS_PER_SEC + int(stamp.nanosec)


def sec_nanosec(ns: int) -> tuple[int, int]:
    """(sec, nanosec) of a stamp in nanoseconds, to fill a header stamp."""
    ns = int(ns)
    return ns // NS_PER_SEC, ns % NS_PER_SEC
