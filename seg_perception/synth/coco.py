"""COCO-format ground truth and the on-disk synthetic dataset.

Layout written by ``write_coco_dataset``::

    out_dir/annotations.json
    out_dir/images/000000.png          RGB (or .jpg)
    out_dir/depth/000000.png           sensor depth, uint16 millimetres, 0 = no reading
    out_dir/depth_gt/000000.png        exact z-buffer depth, uint16 mm, 0 = no surface
                                       (or .npy float32 metres with NaN, depth_format="npy")

Standard COCO fields (RLE masks with string counts, bbox [x, y, w, h] in pixels,
area, iscrowd = 0, category ids 1..C, keypoints as a flat (x, y, v) list over ALL
keypoints with v = 0 for the ones a class does not have, num_keypoints, skeleton
1-based) are joined by extra fields the package's 3D and tracking tests need:

per image:      camera_info {K, D, distortion_model, width, height, frame_id},
                camera_pose (world-from-camera 4x4, row-major), depth_file,
                depth_gt_file, depth_format, frame_index, stamp_ns, seed;
per annotation: track_id, centroid_3d, visible_centroid_3d, size_3d, rotation_3d
                (camera-from-object 3x3, row-major), keypoints_3d (flat 3K, metres,
                zeros for keypoints the class lacks), visible_fraction.

3D values are in the camera optical frame (x right, y down, z forward, metres).
Floats are rounded (pixels to 1e-3, metres to 1e-5) so that the same seed gives a
byte-identical file.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from seg_perception.synth.classes import (CLASS_KEYPOINTS, CLASS_NAMES, KEYPOINT_NAMES, KEYPOINT_SIGMAS,
                                          SKELETON, class_skeleton)
from seg_perception.synth.scene import Frame, SceneConfig, generate_frame

FRAME_ID = "camera_color_optical_frame"
GENERATOR = "seg_perception.synth"
FORMAT_VERSION = 1


def encode_mask(mask: np.ndarray) -> dict:
    """COCO compressed RLE of a (H, W) mask, with ``counts`` as str (JSON-ready)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def coco_categories() -> list[dict]:
    """Category entries (ids 1..C). Each lists all keypoint names, because every
    annotation carries all K keypoints, and the skeleton edges of its own class
    (1-based, as COCO)."""
    return [{"id": i + 1, "name": name, "supercategory": "object", "keypoints": list(KEYPOINT_NAMES),
             "skeleton": [[a + 1, b + 1] for a, b in class_skeleton(name)],
             "keypoint_indices": list(CLASS_KEYPOINTS[name])}
            for i, name in enumerate(CLASS_NAMES)]


def _r(values, nd: int) -> list[float]:
    return [round(float(v), nd) for v in np.asarray(values, dtype=np.float64).reshape(-1)]


def camera_info_dict(frame: Frame) -> dict:
    cam = frame.camera
    return {"K": _r(cam.K, 6), "D": [0.0] * 5, "distortion_model": "plumb_bob", "width": cam.width,
            "height": cam.height, "frame_id": FRAME_ID}


def frame_to_coco(frame: Frame, image_id: int, first_ann_id: int, file_name: str,
                  extra: dict | None = None) -> tuple[dict, list[dict]]:
    """The COCO image entry and annotations (ids from ``first_ann_id``) of one frame."""
    image = {"id": int(image_id), "file_name": file_name, "width": frame.camera.width,
             "height": frame.camera.height, "camera_info": camera_info_dict(frame),
             "camera_pose": _r(frame.camera_pose, 6), "frame_index": int(frame.index),
             "stamp_ns": int(frame.stamp_ns), "seed": int(frame.seed)}
    image.update(extra or {})
    anns = []
    for j, inst in enumerate(frame.instances):
        kp = []
        for x, y, v in inst.keypoints:
            kp += [round(float(x), 3), round(float(y), 3), int(v)] if v > 0 else [0, 0, 0]
        kp3 = np.nan_to_num(inst.keypoints_3d, nan=0.0)
        anns.append({
            "id": int(first_ann_id + j), "image_id": int(image_id), "category_id": inst.class_id + 1,
            "segmentation": encode_mask(inst.mask), "area": int(inst.area),
            "bbox": [float(v) for v in inst.bbox], "iscrowd": 0,
            "keypoints": kp, "num_keypoints": int(np.count_nonzero(inst.keypoints[:, 2] > 0)),
            "track_id": int(inst.track_id), "centroid_3d": _r(inst.centroid_3d, 5),
            "visible_centroid_3d": _r(inst.visible_centroid_3d, 5), "size_3d": _r(inst.size_3d, 5),
            "rotation_3d": _r(inst.rotation, 6), "keypoints_3d": _r(kp3, 5),
            "visible_fraction": round(inst.visible_fraction, 4),
        })
    return image, anns


def coco_document(images: list[dict], annotations: list[dict], info: dict) -> dict:
    """A complete COCO dict with the synthetic categories and keypoint tables."""
    return {
        "info": {"description": "seg_perception synthetic RGB-D scenes", "generator": GENERATOR,
                 "format_version": FORMAT_VERSION, **info},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": coco_categories(),
        "keypoint_names": list(KEYPOINT_NAMES),
        "skeleton": [[a, b] for a, b in SKELETON],  # 0-based, over keypoint_names
        "class_keypoints": {k: list(v) for k, v in CLASS_KEYPOINTS.items()},
        "keypoint_sigmas": list(KEYPOINT_SIGMAS),
    }


def dump_json(doc: Any, path: str | Path) -> None:
    """Deterministic JSON (fixed key order and separators, no NaN)."""
    Path(path).write_text(json.dumps(doc, separators=(",", ":"), allow_nan=False) + "\n")


# ----------------------------------------------------------------------- depth files


def save_depth(path: str | Path, depth: np.ndarray) -> None:
    """Write depth (metres, NaN/inf = none) as uint16 millimetre PNG (0 = none) or, for
    a ``.npy`` path, as float32 metres."""
    path = Path(path)
    if path.suffix == ".npy":
        np.save(path, np.where(np.isfinite(depth), depth, np.nan).astype(np.float32))
        return
    with np.errstate(invalid="ignore"):
        mm = np.where(np.isfinite(depth), np.round(depth * 1000.0), 0.0)
    mm = np.where((mm >= 1) & (mm <= 65535), mm, 0).astype(np.uint16)
    if not cv2.imwrite(str(path), mm):
        raise OSError(f"could not write depth image {path}")


def load_depth(path: str | Path) -> np.ndarray:
    """Read a depth file written by ``save_depth`` as float32 metres with NaN holes."""
    path = Path(path)
    if path.suffix == ".npy":
        return np.load(path).astype(np.float32)
    mm = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mm is None:
        raise FileNotFoundError(f"depth image not found or unreadable: {path}")
    out = mm.astype(np.float32) / 1000.0
    out[mm == 0] = np.nan
    return out


def write_rgb(path: str | Path, rgb: np.ndarray, jpeg_quality: int = 92) -> None:
    path = Path(path)
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if path.suffix.lower() in (".jpg", ".jpeg") else \
        [cv2.IMWRITE_PNG_COMPRESSION, 3]
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params):
        raise OSError(f"could not write image {path}")


# ---------------------------------------------------------------------------- dataset


def _sample(job: tuple) -> tuple[dict, list[dict]]:
    """Generate, write and annotate one dataset image (runs in worker processes)."""
    out_dir, index, seed, width, height, image_ext, depth_ext, config = job
    frame = generate_frame(seed, index, width, height, config)
    stem = f"{index:06d}"
    img_rel = f"images/{stem}.{image_ext}"
    depth_rel = f"depth/{stem}.{depth_ext}"
    gt_rel = f"depth_gt/{stem}.{depth_ext}"
    write_rgb(Path(out_dir) / img_rel, frame.rgb)
    save_depth(Path(out_dir) / depth_rel, frame.depth)
    save_depth(Path(out_dir) / gt_rel, frame.depth_gt)
    extra = {"depth_file": depth_rel, "depth_gt_file": gt_rel,
             "depth_format": "npy_float32_m" if depth_ext == "npy" else "png_uint16_mm"}
    return frame_to_coco(frame, index + 1, 0, img_rel, extra)


def write_coco_dataset(out_dir: str | Path, n_images: int, seed: int, width: int = 384, height: int = 288,
                       image_format: str = "png", depth_format: str = "png", workers: int = 1,
                       config: SceneConfig | None = None, progress: bool = False) -> Path:
    """Generate ``n_images`` independent random frames into ``out_dir`` (see module doc).

    Image ``i`` depends only on (seed, i), so the output is identical whatever
    ``workers`` is. Returns the path of ``annotations.json``.
    """
    if n_images < 0:
        raise ValueError(f"n_images must be >= 0, got {n_images}")
    if image_format not in ("png", "jpg"):
        raise ValueError(f"image_format must be 'png' or 'jpg', got {image_format!r}")
    if depth_format not in ("png", "npy"):
        raise ValueError(f"depth_format must be 'png' (uint16 mm) or 'npy' (float32 m), got {depth_format!r}")
    out = Path(out_dir)
    for sub in ("images", "depth", "depth_gt"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    jobs = [(str(out), i, int(seed), int(width), int(height), image_format, depth_format, config)
            for i in range(int(n_images))]
    bar = progress_bar(n_images, "images", progress)
    images, annotations = [], []

    def collect(result: tuple[dict, list[dict]]) -> None:
        image, anns = result
        for a in anns:
            a["id"] = len(annotations) + 1
            annotations.append(a)
        images.append(image)
        bar.update(1)

    try:
        if workers > 1 and n_images > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for result in pool.map(_sample, jobs, chunksize=4):
                    collect(result)
        else:
            for job in jobs:
                collect(_sample(job))
    finally:
        bar.close()
    info = {"seed": int(seed), "width": int(width), "height": int(height), "num_images": int(n_images)}
    path = out / "annotations.json"
    dump_json(coco_document(images, annotations, info), path)
    return path


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, unit: str, enabled: bool):
    """A tqdm bar when ``enabled``, else a do-nothing stand-in with the same methods."""
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, dynamic_ncols=True, disable=os.environ.get("TQDM_DISABLE") == "1")
