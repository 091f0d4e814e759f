"""Input QoS that works out of the box, as rosbag2 and RViz choose it."""

from __future__ import annotations

from rclpy.node import Node
from rclpy.qos import QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy, QoSDurabilityPolicy

RELIABILITY = {
    "reliable": QoSReliabilityPolicy.RELIABLE,
    "best_effort": QoSReliabilityPolicy.BEST_EFFORT,
}


def offered_reliabilities(node: Node, topic: str) -> list[QoSReliabilityPolicy]:
    """Reliability of every publisher currently on ``topic`` (resolved name)."""
    return [info.qos_profile.reliability for info in node.get_publishers_info_by_topic(topic)]


def choose_reliability(setting: str, offered: list[QoSReliabilityPolicy]) -> QoSReliabilityPolicy:
    """The reader reliability for a setting of ``auto``/``reliable``/``best_effort``.

    ``auto``: reliable when every publisher offers reliable (or none is there yet),
    else best effort, which matches any writer. A reliable reader matters for
    camera-sized frames across processes: with Fast DDS defaults a best-effort
    reader never completes a fragmented 640x480 sample.
    """
    if setting != "auto":
        return RELIABILITY[setting]
    if all(r == QoSReliabilityPolicy.RELIABLE for r in offered):
        return QoSReliabilityPolicy.RELIABLE
    return QoSReliabilityPolicy.BEST_EFFORT


def rematch(setting: str, current: QoSReliabilityPolicy,
            offered: list[QoSReliabilityPolicy]) -> QoSReliabilityPolicy | None:
    """The reliability to resubscribe with now that the publishers offer ``offered``, or
    None to keep ``current``: only in ``auto``, and only while some publisher is there
    (a camera that went away does not change the subscription)."""
    if setting != "auto" or not offered:
        return None
    wanted = choose_reliability("auto", offered)
    return None if wanted == current else wanted


def input_qos(reliability: QoSReliabilityPolicy, depth: int) -> QoSProfile:
    return QoSProfile(
        history=QoSHistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=reliability,
        durability=QoSDurabilityPolicy.VOLATILE,
    )


def reliability_name(policy: QoSReliabilityPolicy) -> str:
    return "reliable" if policy == QoSReliabilityPolicy.RELIABLE else "best_effort"
