"""A run read from outputs recorded elsewhere: ``ros2 bag record`` of the node on a robot.

On the robot the node runs as deployed while ``ros2 bag play`` feeds it a recording
and ``ros2 bag record`` keeps what it publishes; this module turns that output bag
into a run (records and output bag), so it compares with a golden run like any other.
Each recorded InstanceArray is matched to the input image with the same header
stamp; images with no output are recorded as dropped.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Sequence

from seg_perception.core.stamps import stamp_ns
from seg_perception.bags import BagError, typestore
from seg_perception.regression.golden import RunWriter, sha256_of
from seg_perception.regression.messages import (
    INSTANCE_ARRAY, MODEL_INFO, OUTPUT_TOPICS, POSE_KEYPOINTS_ARRAY, frame_from_instance_array,
)
from seg_perception.regression.records import FrameResult
from seg_perception.regression.sources import BagSource, InputDigest, iter_frames

OUR_TYPES = (INSTANCE_ARRAY, POSE_KEYPOINTS_ARRAY, MODEL_INFO)


def _read_outputs(path: Path) -> tuple[dict[str, list[tuple[str, int, bytes, Any]]], Any]:
    """Per message type, ``(topic, bag time, CDR, message)`` in order; and the last ModelInfo (or None)."""
    from rosbags.highlevel import AnyReader

    if not path.exists():
        raise BagError(f"recorded output bag not found: {path}")
    found: dict[str, list[tuple[str, int, bytes, Any]]] = defaultdict(list)
    try:
        with AnyReader([path], default_typestore=typestore()) as reader:
            conns = [c for c in reader.connections if c.msgtype in OUR_TYPES]
            topics = {c.msgtype: sorted({x.topic for x in conns if x.msgtype == c.msgtype}) for c in conns}
            if INSTANCE_ARRAY not in topics:
                listing = ", ".join(f"{c.topic} ({c.msgtype})" for c in reader.connections) or "none"
                raise BagError(f"{path}: no {INSTANCE_ARRAY} topic (record the node's 'instances'); topics: {listing}")
            for msgtype, names in topics.items():
                if len(names) > 1:
                    raise BagError(f"{path}: several {msgtype} topics ({', '.join(names)}): record one node at a time")
            for conn, t, raw in reader.messages(connections=conns):
                found[conn.msgtype].append((conn.topic, t, bytes(raw), reader.deserialize(raw, conn.msgtype)))
    except BagError:
        raise
    except Exception as exc:
        raise BagError(f"cannot read recorded output bag {path}: {type(exc).__name__}: {exc}") from None
    infos = found.get(MODEL_INFO, [])
    return found, (infos[-1][3] if infos else None)


def run_recorded(sources: Sequence[BagSource], recorded: Sequence[str | Path], writer: RunWriter,
                 progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """One recorded output bag per source (same order); returns the manifest's model/backend entries."""
    if len(recorded) != len(sources):
        raise ValueError(f"--recorded needs one output bag per recording: {len(sources)} recordings, "
                         f"{len(recorded)} output bags")
    info = None
    for source, out_path in zip(sources, recorded):
        outputs, bag_info = _read_outputs(Path(out_path))
        info = bag_info or info
        by_stamp: dict[int, list[Any]] = defaultdict(list)
        for _, _, _, msg in outputs[INSTANCE_ARRAY]:
            by_stamp[stamp_ns(msg.header.stamp)].append(msg)
        used: dict[int, int] = defaultdict(int)
        writer.add_bag(source.key, {**source.info(), "recorded_outputs": str(out_path)})
        for msgtype in OUR_TYPES:
            for _, t, cdr, _ in outputs.get(msgtype, []):
                writer.write_message(OUTPUT_TOPICS[msgtype], msgtype, t, cdr)
        digest = InputDigest()
        for frame in iter_frames(source):
            digest.add(frame)
            stamp = stamp_ns(frame.msg.header.stamp)
            candidates = by_stamp.get(stamp, [])
            if used[stamp] < len(candidates):
                msg = candidates[used[stamp]]
                used[stamp] += 1
                writer.write_frame(frame_from_instance_array(msg, source.key, frame.index, frame.timestamp_ns))
            else:
                writer.write_frame(FrameResult(source.key, frame.index, stamp, frame.timestamp_ns,
                                               str(frame.msg.header.frame_id), int(getattr(frame.msg, "width", 0)),
                                               int(getattr(frame.msg, "height", 0)), None))
            if progress is not None:
                progress(1)
        writer.set_bag_info(input_sha256=digest.hexdigest(),
                            outputs_without_input=sum(len(v) - used[s] for s, v in by_stamp.items()))
    return _entries(info)


def _entries(info: Any) -> dict[str, Any]:
    if info is None:  # model_info is latched; a recorder started late may still miss it
        return {"model": {"name": None, "architecture": None, "path": None, "sha256": None, "class_names": [],
                          "keypoint_names": [], "input_size": None},
                "backend": {"backend": None, "device": None, "precision": None, "model_path": None}}
    path = Path(info.model_path)
    return {
        "model": {"name": info.model_name, "architecture": info.architecture, "path": info.model_path,
                  "sha256": sha256_of(path) if path.is_file() else None,
                  "class_names": list(info.class_names), "keypoint_names": list(info.keypoint_names),
                  "input_size": [int(info.input_width), int(info.input_height)]},
        "backend": {"backend": info.backend, "device": info.device, "precision": info.precision,
                    "model_path": info.model_path},
    }
