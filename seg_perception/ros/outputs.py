"""The node's outputs: its lifecycle publishers and what one frame's result publishes.

``OutputPublisher`` owns the publishers across the lifecycle (created on configure,
``model_info`` latched on activate, destroyed on cleanup) and turns a
``pipeline.ProcessedFrame`` into messages; the optional outputs (debug image, markers,
point cloud, maps) are only computed while enabled and subscribed.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
from rclpy.lifecycle import LifecycleNode
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, PointCloud2
from visualization_msgs.msg import MarkerArray

from seg_perception.core.drawing import draw_overlay
from seg_perception.core.maps import class_map, instance_map
from seg_perception.core.metadata import ModelMetadata
from seg_perception.msg import InstanceArray, ModelInfo, PoseKeypointsArray
from seg_perception.pipeline import ProcessedFrame, SegmentationPipeline
from seg_perception.pipeline.depth import cloud_points
from seg_perception.ros import conversions
from seg_perception.ros.conversions import BUILDER
from seg_perception.ros.visualization import detections_to_markers, intrinsics_or_guess


class OutputPublisher:
    """Publishes one camera's results on the node's output topics.

    param:      reads a parameter's current value (``node.p``).
    warn:       (problem kind, message) for a throttled warning.
    prefix:     the camera's name, prefixing its topics (``front/instances``); "" for one camera.
    model_info: this publisher owns the node's one ``model_info`` (the first camera's does).
    """

    def __init__(self, node: LifecycleNode, param: Callable[[str], Any], warn: Callable[[str, str], None],
                 prefix: str = "", model_info: bool = True) -> None:
        self._node = node
        self._p = param
        self._warn = warn
        self._prefix = prefix
        self._has_model_info = model_info
        self._pubs: dict[str, Any] = {}

    def topic(self, name: str) -> str:
        return f"{self._prefix}/{name}" if self._prefix else name

    def configure(self) -> None:
        node = self._node
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        t = self.topic
        self._pubs = {
            "instances": node.create_lifecycle_publisher(InstanceArray, t("instances"), 10),
            "keypoints": node.create_lifecycle_publisher(PoseKeypointsArray, t("keypoints"), 10),
            "debug_image": node.create_lifecycle_publisher(Image, t("debug/image"), 2),
            "markers": node.create_lifecycle_publisher(MarkerArray, t("debug/markers"), 2),
            "points": node.create_lifecycle_publisher(PointCloud2, t("instances/points"), 2),
            "instance_map": node.create_lifecycle_publisher(Image, t("instance_map"), 2),
            "class_map": node.create_lifecycle_publisher(Image, t("class_map"), 2),
        }
        if self._has_model_info:  # one per node, not per camera: the model is shared
            self._pubs["model_info"] = node.create_lifecycle_publisher(ModelInfo, "model_info", latched)

    def activate(self, model: SegmentationPipeline) -> None:
        """Latch ``model_info`` (the lifecycle publishers are active by now)."""
        if "model_info" not in self._pubs:
            return
        backend = model.backend
        header = BUILDER.header(self._node.get_clock().now().nanoseconds, "")
        self._pubs["model_info"].publish(BUILDER.model_info(
            model.metadata, backend.name, str(backend.device), backend.precision, str(backend.model_path), header))

    def cleanup(self) -> None:
        node = self._node
        for pub in self._pubs.values():
            node.destroy_lifecycle_publisher(pub) if hasattr(node, "destroy_lifecycle_publisher") \
                else node.destroy_publisher(pub)
        self._pubs = {}

    def publish_instances(self, md: ModelMetadata, header: Any, frame: ProcessedFrame,
                          times: dict[str, float] | None = None) -> tuple[Any, list[Any]]:
        """``instances`` of one frame, published first (before its grasp points are
        computed); returns that message and its "model" poses for ``publish_rest``.
        ``times`` receives the seconds spent building messages ("build") and in the
        publishers' ``publish`` calls (serialisation and handing to DDS: "publish")."""
        with _Timed(self._pubs, times) as pubs:
            d3 = frame.frame3d.instances if frame.frame3d is not None else None
            height, width = frame.image_size
            instances, model_poses = BUILDER.instance_array(frame.detections, header, width, height, md,
                                                            self._p("mask_encoding"), instances_3d=d3)
            pubs["instances"].publish(instances)
        return instances, model_poses

    def publish_rest(self, md: ModelMetadata, header: Any, rgb: np.ndarray, frame: ProcessedFrame,
                     built: tuple[Any, list[Any]], times: dict[str, float] | None = None) -> None:
        """Every other output of the frame (``built``: what ``publish_instances`` returned);
        the optional ones only while enabled and subscribed. ``times`` as there, added to."""
        with _Timed(self._pubs, times) as pubs:
            self._publish_rest(md, header, rgb, frame, built, pubs)

    def _publish_rest(self, md: ModelMetadata, header: Any, rgb: np.ndarray, frame: ProcessedFrame,
                      built: tuple[Any, list[Any]], pubs: "_TimedPublishers") -> None:
        p = self._p
        detections, grasp, frame3d, intrinsics = frame.detections, frame.grasp, frame.frame3d, frame.intrinsics
        height, width = rgb.shape[:2]
        d3 = frame3d.instances if frame3d is not None else None
        if md.num_keypoints or grasp is not None:
            pubs["keypoints"].publish(BUILDER.keypoints_array(
                *built, grasp=grasp, grasp_positions=frame3d.grasp if frame3d is not None else None,
                grasp_valid=frame3d.grasp_valid if frame3d is not None else None))
        if p("publish_debug_image") and pubs["debug_image"].get_subscription_count() > 0:
            overlay = draw_overlay(rgb, detections, md.class_names, md.keypoint_names, md.skeleton,
                                   keypoint_threshold=p("keypoint_score_threshold"),
                                   ranges=np.linalg.norm(d3.centroids, axis=1) if d3 is not None else None)
            pubs["debug_image"].publish(BUILDER.image(header, overlay, "rgb8"))
        if p("publish_markers") and pubs["markers"].get_subscription_count() > 0:
            k = (intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy) if intrinsics is not None \
                else intrinsics_or_guess(None, width, height)
            pubs["markers"].publish(detections_to_markers(
                detections, header, md.class_names, md.skeleton, k, depth=p("marker_depth"),
                keypoint_threshold=p("keypoint_score_threshold"), instances_3d=d3))
        if (frame3d is not None and intrinsics is not None and p("publish_points")
                and pubs["points"].get_subscription_count() > 0):
            points = cloud_points(detections, frame3d.depth, intrinsics, frame3d.params,
                                  p("points_stride"), frame.tracking)
            pubs["points"].publish(conversions.points_to_cloud_msg(points, header))
        if p("publish_instance_map") and pubs["instance_map"].get_subscription_count() > 0:
            ids = instance_map(detections, height, width, untracked="skip" if frame.tracking else "index")
            pubs["instance_map"].publish(conversions.map_image_msg(ids, header))
        if p("publish_class_map") and pubs["class_map"].get_subscription_count() > 0:
            try:
                pubs["class_map"].publish(conversions.map_image_msg(class_map(detections, height, width), header))
            except ValueError as exc:  # a model with more than 255 classes
                self._warn("class_map", f"class_map not published: {exc}")


class _TimedPublisher:
    """A publisher whose ``publish`` calls add their seconds to a shared counter."""

    def __init__(self, pub: Any, sent: list[float]) -> None:
        self._pub, self._sent = pub, sent

    def publish(self, msg: Any) -> None:
        t0 = time.perf_counter()
        self._pub.publish(msg)
        self._sent[0] += time.perf_counter() - t0

    def get_subscription_count(self) -> int:
        return self._pub.get_subscription_count()


class _TimedPublishers(dict):
    """The publishers by key, each timed (the "publish" stage)."""

    def __init__(self, pubs: dict[str, Any], sent: list[float]) -> None:
        super().__init__({k: _TimedPublisher(v, sent) for k, v in pubs.items()})


class _Timed:
    """A block that builds and publishes messages: its seconds in the publishers' calls
    are added to ``times["publish"]``, the rest to ``times["build"]``."""

    def __init__(self, pubs: dict[str, Any], times: dict[str, float] | None) -> None:
        self._sent = [0.0]
        self._pubs = _TimedPublishers(pubs, self._sent)
        self._times = times

    def __enter__(self) -> _TimedPublishers:
        self._started = time.perf_counter()
        return self._pubs

    def __exit__(self, *exc: object) -> None:
        if self._times is not None:
            sent = self._sent[0]
            self._times["publish"] = self._times.get("publish", 0.0) + sent
            self._times["build"] = self._times.get("build", 0.0) + time.perf_counter() - self._started - sent
