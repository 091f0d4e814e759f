"""Contact sheets: a grid of frames with their ground truth drawn on top.

For people, not for training: a quick look at whether scenes are plausible and the
annotations line up (masks tinted per track id, boxes, keypoints filled when visible
and hollow when occluded, skeleton edges, class names), optionally with the sensor
depth beside each frame.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np

from seg_perception.synth.classes import CLASS_KEYPOINTS, SKELETON
from seg_perception.synth.scene import Frame


def track_colour(track_id: int) -> tuple[int, int, int]:
    """A stable, distinct RGB colour per track id (golden-ratio hue steps)."""
    hue = int((track_id * 0.61803398875 % 1.0) * 180)
    hsv = np.uint8([[[hue, 220, 255]]])
    return tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def draw_frame(frame: Frame, alpha: float = 0.45, labels: bool = True) -> np.ndarray:
    """RGB uint8 copy of ``frame.rgb`` with masks, boxes, keypoints and skeletons."""
    img = frame.rgb.astype(np.float32)
    for inst in frame.instances:
        col = np.array(track_colour(inst.track_id), dtype=np.float32)
        img[inst.mask] = img[inst.mask] * (1 - alpha) + col * alpha
    out = np.clip(img, 0, 255).astype(np.uint8)
    for inst in frame.instances:
        col = track_colour(inst.track_id)
        contours, _ = cv2.findContours(inst.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, col, 1)
        x, y, w, h = inst.bbox
        cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), col, 1)
        kp = inst.keypoints
        own = set(CLASS_KEYPOINTS[inst.class_name])
        for a, b in SKELETON:
            if a in own and b in own and kp[a, 2] > 0 and kp[b, 2] > 0:
                cv2.line(out, (int(round(kp[a, 0])), int(round(kp[a, 1]))),
                         (int(round(kp[b, 0])), int(round(kp[b, 1]))), (255, 255, 255), 1, cv2.LINE_AA)
        for k in sorted(own):
            if kp[k, 2] <= 0:
                continue
            p = (int(round(kp[k, 0])), int(round(kp[k, 1])))
            cv2.circle(out, p, 3, col if kp[k, 2] >= 2 else (0, 0, 0), -1 if kp[k, 2] >= 2 else 1, cv2.LINE_AA)
            cv2.circle(out, p, 3, (255, 255, 255), 1, cv2.LINE_AA)
        if labels:
            cv2.putText(out, f"{inst.class_name}#{inst.track_id}", (x, max(10, y - 3)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.35, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def depth_colour(depth: np.ndarray, near: float = 0.2, far: float = 3.0) -> np.ndarray:
    """RGB uint8 rendering of a depth image (metres); NaN (no reading) is black."""
    d = np.nan_to_num((depth - near) / (far - near), nan=-1.0)
    img = cv2.applyColorMap((np.clip(d, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    img[~np.isfinite(depth)] = 0
    return img


def make_contact_sheet(frames: Iterable[Frame], cols: int = 4, tile_width: int = 320,
                       with_depth: bool = False) -> np.ndarray:
    """A grid (RGB uint8) of annotated frames, each scaled to ``tile_width`` pixels wide."""
    tiles = []
    for f in frames:
        t = draw_frame(f)
        if with_depth:
            t = np.concatenate([t, depth_colour(f.depth)], axis=1)
        w = tile_width * (2 if with_depth else 1)
        h = int(round(t.shape[0] * w / t.shape[1]))
        tiles.append(cv2.resize(t, (w, h), interpolation=cv2.INTER_AREA))
    if not tiles:
        raise ValueError("no frames for the contact sheet")
    th = max(t.shape[0] for t in tiles)
    tw = tiles[0].shape[1]
    rows = (len(tiles) + cols - 1) // cols
    sheet = np.zeros((rows * (th + 2), min(cols, len(tiles)) * (tw + 2), 3), dtype=np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        sheet[r * (th + 2):r * (th + 2) + t.shape[0], c * (tw + 2):c * (tw + 2) + t.shape[1]] = t
    return sheet


def save_contact_sheet(frames: Sequence[Frame] | Iterable[Frame], path: str | Path, cols: int = 4,
                       tile_width: int = 320, with_depth: bool = False) -> Path:
    """Write ``make_contact_sheet`` as a PNG and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet = make_contact_sheet(frames, cols, tile_width, with_depth)
    if not cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write contact sheet {path}")
    return path
