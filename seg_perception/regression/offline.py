"""The offline run: every recorded image through ``FrameProcessor``, no ROS.

Each image is decoded as the node decodes it, run through the node's frame processor
with the same parameters, and turned into the messages the node would publish (with the
rosbags typestore); the run's records are read back from those messages, so an
offline run and a recording of the real node give identical records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from seg_perception.bags import typestore
from seg_perception.core.stamps import stamp_ns
from seg_perception.pipeline import FrameProcessor, SegmentationPipeline
from seg_perception.regression.golden import RunWriter
from seg_perception.messages import MessageBuilder
from seg_perception.regression.messages import (
    INSTANCE_ARRAY, MODEL_INFO, OUTPUT_TOPICS, POSE_KEYPOINTS_ARRAY, frame_from_instance_array,
)
from seg_perception.regression.records import FrameResult
from seg_perception.regression.sources import BagSource, InputDigest, frame_rgb, iter_frames

Progress = Callable[[int], None]


def backend_description(pipeline: SegmentationPipeline, values: Mapping[str, Any]) -> dict[str, str]:
    """What ModelInfo reports about the backend (as the node fills it in)."""
    backend = pipeline.backend
    return {"backend": backend.name, "device": str(backend.device), "precision": backend.precision,
            "model_path": str(backend.model_path)}


def run_offline(sources: Sequence[BagSource], pipeline: SegmentationPipeline, values: Mapping[str, Any],
                writer: RunWriter, progress: Progress | None = None,
                on_frame: Callable[[FrameResult], None] | None = None) -> None:
    """Run every image of ``sources``; write records and output bags through ``writer``.

    Recordings are independent units: with ``tracking_enabled`` each recording gets a
    tracker of its own (a ``FrameProcessor`` of its own over the shared model: no track
    carries over from one recording into the next), so a recording's outputs do not depend
    on which recordings ran before it or where it ran (``regression.distributed`` runs them
    apart, on Ray workers, with the same results). Otherwise as the node, through the same
    ``FrameProcessor``: ByteTrack's publish rule, and the "grasp" keypoint set is
    published with ``publish_grasp_keypoints``. Recordings are replayed without depth
    (as ``--through-ros`` does), so no instance has 3D.
    Raises FrameError (names bag, topic, frame) when an image cannot be read or decoded.
    """
    messages = MessageBuilder.from_typestore(typestore())
    md = pipeline.metadata
    backend = backend_description(pipeline, values)
    max_pixels = int(values["max_image_pixels"])
    encoding = str(values["mask_encoding"])
    for source in sources:
        processor = FrameProcessor(values)  # one per recording (tracking), over the shared model
        processor.attach(pipeline)
        writer.add_bag(source.key, source.info())
        digest = InputDigest()
        for i, frame in enumerate(iter_frames(source)):
            digest.add(frame)
            rgb = frame_rgb(source, frame, max_pixels)
            stamp = stamp_ns(frame.msg.header.stamp)
            result = processor.process(rgb, stamp)
            grasp = result.grasp
            # Our typestore's Header, with the recorded stamp and frame_id (the node keeps them).
            header = messages.header(stamp, str(frame.msg.header.frame_id))
            instances, keypoints = messages.detections(result.detections, header, rgb.shape[1], rgb.shape[0], md,
                                                       encoding, grasp=grasp)
            if i == 0:  # the node latches model_info; the bag carries it once, before the first output
                info = messages.model_info(md, header=messages.header(frame.timestamp_ns, ""), **backend)
                writer.write_message(OUTPUT_TOPICS[MODEL_INFO], MODEL_INFO, frame.timestamp_ns, messages.serialize(info))
            writer.write_message(OUTPUT_TOPICS[INSTANCE_ARRAY], INSTANCE_ARRAY, frame.timestamp_ns,
                                 messages.serialize(instances))
            if md.num_keypoints or grasp is not None:  # as the node publishes them
                writer.write_message(OUTPUT_TOPICS[POSE_KEYPOINTS_ARRAY], POSE_KEYPOINTS_ARRAY, frame.timestamp_ns,
                                     messages.serialize(keypoints))
            record = frame_from_instance_array(instances, source.key, frame.index, frame.timestamp_ns)
            writer.write_frame(record)
            if on_frame is not None:
                on_frame(record)
            if progress is not None:
                progress(1)
        writer.set_bag_info(input_sha256=digest.hexdigest())


def model_description(pipeline: SegmentationPipeline, model_path: Path) -> dict[str, Any]:
    """The manifest's ``model`` entry: enough to tell two models apart (the file's sha256)."""
    from seg_perception.regression.golden import sha256_of

    md = pipeline.metadata
    model_path = Path(pipeline.backend.model_path or model_path)  # the file the backend loaded
    return {"name": md.name, "architecture": md.architecture, "path": str(model_path),
            "sha256": sha256_of(model_path) if model_path.is_file() else None,
            "class_names": list(md.class_names), "keypoint_names": list(md.keypoint_names),
            "input_size": [md.input_width, md.input_height]}
