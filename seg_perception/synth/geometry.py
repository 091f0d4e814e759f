"""Camera model and small rigid-body helpers.

Frames: the *world* is z-up, metres, with the floor at z = 0. The *camera optical
frame* follows ROS REP 103 for cameras: x right, y down, z forward (metres).
Pixel coordinates follow OpenCV/ROS ``CameraInfo``: the centre of pixel column
``u`` is at x = u, so a point projects to ``(fx X/Z + cx, fy Y/Z + cy)`` and lands
in pixel ``round(x), round(y)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CameraModel:
    """A distortion-free pinhole camera; focal lengths and centre in pixels."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    @property
    def K(self) -> np.ndarray:
        """The 3x3 intrinsic matrix (float64)."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def project(self, points: np.ndarray) -> np.ndarray:
        """Project ``(N, 3)`` camera-frame points (metres) to ``(N, 2)`` pixels.

        Points at or behind the camera (Z <= 0) project to NaN.
        """
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        z = p[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            x = self.fx * p[:, 0] / z + self.cx
            y = self.fy * p[:, 1] / z + self.cy
        out = np.stack([x, y], axis=1)
        out[z <= 1e-9] = np.nan
        return out

    def ray_directions(self) -> np.ndarray:
        """``(H, W, 3)`` float32 ray through every pixel centre, scaled so dz = 1.

        With dz = 1 the ray parameter of a hit equals its optical-frame depth z,
        which is exactly the value a depth camera reports.
        """
        u = (np.arange(self.width, dtype=np.float32) - np.float32(self.cx)) / np.float32(self.fx)
        v = (np.arange(self.height, dtype=np.float32) - np.float32(self.cy)) / np.float32(self.fy)
        d = np.empty((self.height, self.width, 3), dtype=np.float32)
        d[:, :, 0] = u[None, :]
        d[:, :, 1] = v[:, None]
        d[:, :, 2] = 1.0
        return d

    @staticmethod
    def from_fov(width: int, height: int, hfov_deg: float) -> "CameraModel":
        """A camera with square pixels, the given horizontal field of view and a centred
        principal point (OpenCV convention: (W - 1) / 2)."""
        fx = 0.5 * width / np.tan(np.radians(hfov_deg) / 2.0)
        return CameraModel(width, height, float(fx), float(fx), (width - 1) / 2.0, (height - 1) / 2.0)


def rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rot_axis(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation by ``angle`` radians about a (not necessarily unit) axis (Rodrigues)."""
    a = np.asarray(axis, dtype=np.float64)
    n = np.linalg.norm(a)
    if n < 1e-12 or abs(angle) < 1e-15:
        return np.eye(3)
    k = a / n
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + np.sin(angle) * kx + (1.0 - np.cos(angle)) * (kx @ kx)


def look_at(eye: np.ndarray, target: np.ndarray, roll: float = 0.0) -> np.ndarray:
    """Rotation whose columns are the optical-frame axes expressed in the z-up world.

    The camera sits at ``eye`` and looks at ``target``; image "down" is as close to
    world -z as the viewing direction allows, then the image is rolled by ``roll``
    radians about the optical axis.
    """
    fwd = np.asarray(target, dtype=np.float64) - np.asarray(eye, dtype=np.float64)
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    if np.linalg.norm(right) < 1e-9:  # looking straight down: pick any right
        right = np.array([1.0, 0.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    r = np.stack([right, down, fwd], axis=1)
    return r @ rot_z(roll)


def rotation_to_quaternion(r: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w) of a rotation matrix, with w >= 0."""
    m = np.asarray(r, dtype=np.float64)
    t = np.trace(m)
    if t > 0:
        s = np.sqrt(t + 1.0) * 2
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
        q = [0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
    elif m[1, 1] > m[2, 2]:
        s = np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
        q = [(m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
    else:
        s = np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
        q = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s]
    q = np.asarray(q)
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q
