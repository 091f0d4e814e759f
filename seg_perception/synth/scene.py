"""Random scenes, camera trajectories and the ground truth of each rendered frame.

A scene is a room (floor and four walls), optionally a table, a set of annotated
objects resting on the support surface (table top or floor) plus unannotated
clutter, and one directional light. Objects are placed by back-projecting random
pixels onto the support surface, so they land in view (sometimes cut by the image
border, as in real robot footage) without a rejection loop over the whole table.

Determinism: every random draw comes from ``numpy.random.default_rng`` seeded with
a tuple (seed, stream, index), so frame ``i`` of a dataset or sequence depends only
on the seed and ``i`` — not on how many frames were generated before it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterator

import numpy as np

from seg_perception.synth.classes import CLASS_NAMES, NUM_KEYPOINTS, class_id
from seg_perception.synth.geometry import CameraModel, look_at, rot_axis, rot_z
from seg_perception.synth.objects import DISTRACTORS, Part, SceneObject, build_object
from seg_perception.synth.render import Light, Plane, Scene, TableTop, cast_rays, object_to_camera, render
from seg_perception.synth.sensor import (CameraEffects, DepthSensor, apply_camera, sample_effects,
                                         simulate_depth)
from seg_perception.synth.textures import Material, pooled_bank, random_srgb, to_linear

# Seed streams, so scene layout, per-frame noise and sequence dynamics never share draws.
_STREAM_FRAME = 0
_STREAM_SEQ_SCENE = 1
_STREAM_SEQ_FRAME = 2

DEFAULT_START_STAMP_NS = 1_700_000_000 * 10**9
# A surface keypoint hidden only by its own object's surface within this distance
# (metres) of it still counts as visible: it sits on the silhouette.
SELF_OCCLUSION_TOL = 0.01


@dataclass
class SceneConfig:
    """Knobs of the scene distribution (counts, probabilities, degrees, metres)."""

    min_objects: int = 2
    max_objects: int = 9
    max_distractors: int = 2
    table_probability: float = 0.6
    hfov_deg: tuple[float, float] = (55.0, 75.0)
    tilt_deg: tuple[float, float] = (30.0, 75.0)     # camera pitch below horizontal
    floor_camera_height: tuple[float, float] = (0.5, 1.5)  # above the floor
    table_camera_height: tuple[float, float] = (0.3, 0.9)  # above the table top
    max_view_distance: float = 1.8  # metres from the camera to the point it looks at
    border_overhang: float = 0.06  # fraction of the image objects may be placed beyond the border
    min_visible_pixels: int = 12   # smaller visible fragments are not annotated
    class_names: tuple[str, ...] = tuple(CLASS_NAMES)


@dataclass
class InstanceTruth:
    """Ground truth of one annotated object in one frame.

    Pixel quantities are in the source image (OpenCV convention, pixel centres at
    integers); 3D quantities in the camera optical frame (x right, y down, z forward,
    metres).

    mask:        (H, W) bool, pixels where this object is the nearest surface.
    bbox:        (x, y, w, h) int, tight box of the mask; x, y is the top-left pixel.
    keypoints:   (K, 3) float32 over ALL keypoints: x, y, v with v = 0 outside the image
                 or not a keypoint of this class (x = y = 0 then), 1 occluded, 2 visible.
    keypoints_3d:(K, 3) float32 keypoint positions; NaN for keypoints the class lacks.
    centroid_3d: (3,) centre of the object's 3D bounding box (its own axes).
    visible_centroid_3d: (3,) mean of the visible surface points (exact depth): what a
                 perfect depth camera and a perfect mask would give.
    size_3d:     (3,) extents of that bounding box along the object's axes.
    rotation:    (3, 3) camera-from-object rotation (object z is up when standing).
    visible_fraction: mask area / area of the object's unoccluded silhouette in view.
    """

    track_id: int
    class_id: int
    class_name: str
    mask: np.ndarray
    bbox: tuple[int, int, int, int]
    area: int
    keypoints: np.ndarray
    keypoints_3d: np.ndarray
    centroid_3d: np.ndarray
    visible_centroid_3d: np.ndarray
    size_3d: np.ndarray
    rotation: np.ndarray
    visible_fraction: float


@dataclass
class Frame:
    """One rendered RGB-D frame and its ground truth.

    rgb:          (H, W, 3) uint8 RGB as the camera delivers it.
    depth:        (H, W) float32 sensor depth, metres, NaN = no reading (registered).
    depth_gt:     (H, W) float32 exact z-buffer depth, metres, NaN = no surface.
    instance_map: (H, W) int32 track id of the nearest annotated object, 0 = background.
    camera_pose:  (4, 4) world-from-camera transform (world z up, floor at z = 0).
    stamp_ns:     capture time, nanoseconds since the epoch.
    """

    index: int
    stamp_ns: int
    rgb: np.ndarray
    depth: np.ndarray
    depth_gt: np.ndarray
    instance_map: np.ndarray
    instances: list[InstanceTruth]
    camera: CameraModel
    camera_pose: np.ndarray
    seed: int = 0

    def instance(self, track_id: int) -> InstanceTruth | None:
        for inst in self.instances:
            if inst.track_id == track_id:
                return inst
        return None


# --------------------------------------------------------------------------- scene


@dataclass
class _Layout:
    scene: Scene
    support_z: float
    # Where objects may stand: table rectangle (centre, yaw, half extents) or the room.
    area_centre: np.ndarray
    area_yaw: float
    area_half: np.ndarray
    target: np.ndarray  # the point the camera looks at, world


def _u(rng: np.random.Generator, lim: tuple[float, float]) -> float:
    return float(rng.uniform(lim[0], lim[1]))


def _floor_material(rng: np.random.Generator) -> Material:
    r = rng.random()
    if r < 0.35:
        base = np.array([0.55, 0.38, 0.22]) * rng.uniform(0.6, 1.3)
        return Material("planks", to_linear(np.clip(base, 0, 1)), to_linear(np.clip(base * 0.6, 0, 1)),
                        scale=float(rng.uniform(0.08, 0.2)), tile=int(rng.integers(2)), amount=0.1, spec=0.15,
                        shininess=15)
    if r < 0.6:
        c = to_linear(random_srgb(rng, sat=(0.0, 0.25), val=(0.4, 0.9)))
        return Material("tiles", c, c * 0.5, scale=float(rng.uniform(0.2, 0.6)), amount=0.15, spec=0.25,
                        shininess=25)
    if r < 0.85:
        c = to_linear(random_srgb(rng, sat=(0.1, 0.6), val=(0.2, 0.7)))
        return Material("noise", c, c * 0.6, scale=0.01, tile=int(rng.integers(3)), amount=0.5)  # carpet
    g = to_linear(np.full(3, rng.uniform(0.4, 0.7)))
    return Material("noise", g, g * 0.7, scale=0.05, tile=int(rng.integers(3)), amount=0.2)  # concrete


def _table_material(rng: np.random.Generator) -> Material:
    r = rng.random()
    if r < 0.45:
        base = np.clip(np.array([0.6, 0.42, 0.25]) * rng.uniform(0.5, 1.4), 0, 1)
        return Material("wood", to_linear(base), to_linear(base * 0.65), scale=float(rng.uniform(0.03, 0.08)),
                        tile=int(rng.integers(2)), axis=int(rng.integers(2)), amount=0.08, spec=0.25, shininess=25)
    if r < 0.8:
        c = to_linear(random_srgb(rng, sat=(0.0, 0.3), val=(0.35, 0.95)))
        return Material("plain", c, c, scale=0.05, tile=int(rng.integers(3)), amount=0.1, spec=0.2, shininess=20)
    c1, c2 = to_linear(random_srgb(rng)), to_linear(random_srgb(rng, val=(0.7, 1.0)))
    return Material("checker" if rng.random() < 0.5 else "stripes", c1, c2, scale=float(rng.uniform(0.02, 0.08)),
                    axis=int(rng.integers(2)), amount=0.15)


def _wall_material(rng: np.random.Generator) -> Material:
    c = to_linear(random_srgb(rng, sat=(0.0, 0.35), val=(0.5, 0.95)))
    if rng.random() < 0.2:
        return Material("stripes", c, c * 0.85, scale=float(rng.uniform(0.05, 0.2)), axis=0, amount=0.05)
    return Material("plain", c, c, scale=0.2, tile=int(rng.integers(3)), amount=0.1)


def _room(rng: np.random.Generator, centre: np.ndarray, half: np.ndarray) -> list[Plane]:
    floor = Plane(np.array([0.0, 0.0, 1.0]), 0.0, np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]),
                  _floor_material(rng))
    wall_mat = _wall_material(rng)
    walls = []
    for axis in (0, 1):
        for sgn in (-1.0, 1.0):
            n = np.zeros(3)
            n[axis] = -sgn  # normal points into the room
            pos = centre[axis] + sgn * half[axis]
            e1 = np.zeros(3)
            e1[1 - axis] = 1.0
            walls.append(Plane(n, float(n[axis] * pos), e1, np.array([0.0, 0.0, 1.0]), wall_mat))
    return [floor] + walls


def _table(rng: np.random.Generator, height: float, half: np.ndarray, yaw: float) -> SceneObject:
    mat = _table_material(rng)
    leg_mat = Material("plain", to_linear(random_srgb(rng, sat=(0.0, 0.3), val=(0.1, 0.6))), amount=0.1, spec=0.3)
    th = 0.03
    parts = [Part("box", (half[0], half[1], th / 2), mat, t=np.array([0.0, 0.0, height - th / 2]))]
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(Part("box", (0.02, 0.02, (height - th) / 2), leg_mat,
                              t=np.array([sx * (half[0] - 0.06), sy * (half[1] - 0.06), (height - th) / 2])))
    return SceneObject(None, parts, R=rot_z(yaw), casts_shadow=False)


def _light(rng: np.random.Generator) -> Light:
    elev, azim = np.radians(rng.uniform(35, 80)), rng.uniform(0, 2 * np.pi)
    d = np.array([np.cos(elev) * np.cos(azim), np.cos(elev) * np.sin(azim), np.sin(elev)])
    warm = rng.uniform(-0.12, 0.12)  # colour temperature: + warm, - cool
    tint = np.array([1.0 + warm, 1.0, 1.0 - warm], dtype=np.float32)
    direct = float(rng.uniform(0.55, 1.1))
    ambient = float(rng.uniform(0.2, 0.5))
    sky_tint = np.array([1.0 - warm * 0.5, 1.0, 1.0 + warm * 0.5], dtype=np.float32)
    return Light(d, (tint * direct).astype(np.float32), (sky_tint * ambient).astype(np.float32))


def _camera_pose(rng: np.random.Generator, target: np.ndarray, height: float,
                 cfg: SceneConfig) -> tuple[np.ndarray, np.ndarray, float, float]:
    """World-from-camera rotation and position looking down at ``target``."""
    # Steeper views from higher up keep the viewing distance short, where
    # household objects still cover enough pixels to learn from.
    lo = max(cfg.tilt_deg[0], np.degrees(np.arcsin(min(1.0, height / cfg.max_view_distance))))
    tilt = np.radians(rng.uniform(min(lo, cfg.tilt_deg[1]), cfg.tilt_deg[1]))
    yaw = rng.uniform(0, 2 * np.pi)
    horiz = height / np.tan(tilt)
    C = target + np.array([-horiz * np.cos(yaw), -horiz * np.sin(yaw), height])
    R = look_at(C, target, roll=np.radians(rng.uniform(-5, 5)))
    return R, C, float(yaw), float(tilt)


def _in_area(p: np.ndarray, r: float, lay: _Layout, margin: float = 0.01) -> bool:
    c, s = np.cos(lay.area_yaw), np.sin(lay.area_yaw)
    q = p[:2] - lay.area_centre
    qx, qy = c * q[0] + s * q[1], -s * q[0] + c * q[1]
    return abs(qx) <= lay.area_half[0] - r - margin and abs(qy) <= lay.area_half[1] - r - margin


def _place(rng: np.random.Generator, obj: SceneObject, placed: list[SceneObject], lay: _Layout,
           camera: CameraModel, R_wc: np.ndarray, C: np.ndarray, cfg: SceneConfig, tries: int = 40) -> bool:
    """Put ``obj`` on the support surface at a random visible spot, apart from the others."""
    W, H = camera.width, camera.height
    ov = cfg.border_overhang
    clustered = rng.random() < 0.6  # most objects gather near the centre of attention
    for _ in range(tries):
        if clustered:
            u = float(np.clip(rng.normal(0.5 * W, 0.22 * W), -ov * W, (1 + ov) * W))
            v = float(np.clip(rng.normal(0.6 * H, 0.2 * H), 0.15 * H, (1 + ov) * H))
        else:
            u = rng.uniform(-ov * W, (1 + ov) * W)
            v = rng.uniform(0.15 * H, (1 + ov) * H)
        d = R_wc @ np.array([(u - camera.cx) / camera.fx, (v - camera.cy) / camera.fy, 1.0])
        if d[2] >= -1e-3:
            continue
        t = (lay.support_z - C[2]) / d[2]
        p = C + t * d
        # Keep the camera clear of the object: some distance, and its top well below the lens.
        top = lay.support_z + float(obj.bounds()[1][2])
        if np.linalg.norm(p - C) < 0.3 + obj.radius or C[2] - top < 0.12 or not _in_area(p, obj.radius, lay):
            continue
        if any(np.hypot(*(p[:2] - o.t[:2])) < obj.radius + o.radius + 0.005 for o in placed):
            continue
        obj.R = rot_z(rng.uniform(0, 2 * np.pi)) @ obj.R
        obj.t = np.array([p[0], p[1], lay.support_z])
        return True
    return False


def sample_scene(rng: np.random.Generator, camera: CameraModel, cfg: SceneConfig,
                 n_objects: int | None = None) -> tuple[_Layout, np.ndarray, np.ndarray]:
    """A random scene and a camera pose (R_wc, C) that looks at its objects."""
    bank = pooled_bank(int(rng.integers(1 << 30)))
    table_obj = None
    if rng.random() < cfg.table_probability:
        height = float(rng.uniform(0.55, 0.8))
        half = np.array([rng.uniform(0.35, 0.8), rng.uniform(0.25, 0.5)])
        yaw = float(rng.uniform(0, 2 * np.pi))
        table_obj = _table(rng, height, half, yaw)
        table = TableTop(np.zeros(2), yaw, half, height)
        support_z = height
        c, s = np.cos(yaw), np.sin(yaw)
        off = np.array([rng.uniform(-0.4, 0.4) * half[0], rng.uniform(-0.4, 0.4) * half[1]])
        target = np.array([c * off[0] - s * off[1], s * off[0] + c * off[1], height])
        cam_h = _u(rng, cfg.table_camera_height)
        area = (np.zeros(2), yaw, half)
    else:
        table = None
        support_z = 0.0
        target = np.array([rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), 0.0])
        lo_h, hi_h = cfg.floor_camera_height
        cam_h = lo_h + (hi_h - lo_h) * float(rng.random()) ** 1.5  # favour a low, close head
    R_wc, C, _, _ = _camera_pose(rng, target, cam_h, cfg)
    # Room around both the camera and the target, walls 0.8-3 m beyond them.
    lo = np.minimum(C[:2], target[:2]) - rng.uniform(0.8, 3.0, size=2)
    hi = np.maximum(C[:2], target[:2]) + rng.uniform(0.8, 3.0, size=2)
    room_centre, room_half = (lo + hi) / 2, (hi - lo) / 2
    if table is None:
        area = (room_centre, 0.0, room_half - 0.05)
    planes = _room(rng, room_centre, room_half)
    scene = Scene(objects=[] if table_obj is None else [table_obj], planes=planes, light=_light(rng), bank=bank,
                  sky=to_linear(random_srgb(rng, sat=(0.0, 0.2), val=(0.3, 0.7))), table=table)
    lay = _Layout(scene, support_z, area[0], area[1], np.asarray(area[2]), target)

    n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1)) if n_objects is None else n_objects
    placed: list[SceneObject] = []
    track = 1
    for _ in range(n):
        name = cfg.class_names[int(rng.integers(len(cfg.class_names)))]
        obj = build_object(name, rng, bank)
        if _place(rng, obj, placed, lay, camera, R_wc, C, cfg):
            obj.track_id = track
            track += 1
            placed.append(obj)
    for _ in range(int(rng.integers(0, cfg.max_distractors + 1))):
        kind = list(DISTRACTORS)[int(rng.integers(len(DISTRACTORS)))]
        obj = DISTRACTORS[kind](rng, bank)
        obj.radius = obj.footprint_radius()
        if _place(rng, obj, placed, lay, camera, R_wc, C, cfg):
            placed.append(obj)
    scene.objects.extend(placed)
    return lay, R_wc, C


# ---------------------------------------------------------------------- ground truth


def _order_box_corners(xy: np.ndarray) -> np.ndarray:
    """Permutation of 4 cyclic top-face corners: clockwise on screen, starting with the
    corner lowest in the image (see ``classes`` for why the order is view-based)."""
    x, y = xy[:, 0], xy[:, 1]
    area = np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y)  # > 0: clockwise with y down
    order = np.arange(4) if area >= 0 else np.arange(4)[::-1]
    start = int(np.argmax(y[order]))
    return np.roll(order, -start)


def _instances(scene: Scene, camera: CameraModel, R_wc: np.ndarray, C: np.ndarray, out,
               min_pixels: int) -> list[InstanceTruth]:
    R_cw = R_wc.T
    H, W = camera.height, camera.width
    D = camera.ray_directions()
    todo = []  # (object index, object, mask, area, Ro, to, keypoints_cam, keypoints_px)
    for oi, obj in enumerate(scene.objects):
        if obj.class_name is None or obj.track_id <= 0:
            continue
        mask = out.instance == obj.track_id
        area = int(np.count_nonzero(mask))
        if area < min_pixels:
            continue
        Ro, to = object_to_camera(obj, R_cw, C)
        P = obj.keypoints @ Ro.T + to
        xy = camera.project(P)
        if obj.class_name == "box":
            perm = _order_box_corners(xy)
            P, xy = P[perm], xy[perm]
        todo.append((oi, obj, mask, area, Ro, to, P, xy))
    if not todo:
        return []
    # One batch of exact visibility rays through every keypoint of the frame.
    allP = np.concatenate([t[6] for t in todo])
    dirs = allP / np.maximum(allP[:, 2:3], 1e-9)
    t_hit, who = cast_rays(scene, R_cw, C, dirs)
    # How far the first hit is from the keypoint, in 3D.
    gap = np.linalg.norm(dirs * np.where(np.isfinite(t_hit), t_hit, 1e6)[:, None] - allP, axis=1)
    result = []
    start = 0
    for oi, obj, mask, area, Ro, to, P, xy in todo:
        kp = np.zeros((NUM_KEYPOINTS, 3), dtype=np.float32)
        kp3 = np.full((NUM_KEYPOINTS, 3), np.nan, dtype=np.float32)
        for j, k in enumerate(obj.kp_index):
            kp3[k] = P[j]
            x, y = xy[j]
            inside = P[j, 2] > 1e-3 and -0.5 <= x < W - 0.5 and -0.5 <= y < H - 0.5
            if not inside:
                continue
            i = start + j
            if obj.kp_interior[j]:
                seen = who[i] == oi
            else:
                # Nothing in front; or only the object's own surface right next to the
                # point (a rim or corner seen at a grazing angle is still "visible").
                seen = t_hit[i] >= P[j, 2] - (2e-3 + 2e-3 * P[j, 2]) or (who[i] == oi and gap[i] <= SELF_OCCLUSION_TOL)
            kp[k] = (x, y, 2.0 if seen else 1.0)
        start += len(P)
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        bbox = (int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1))
        lo, hi = obj.bounds()
        pts = out.z[mask][:, None].astype(np.float64) * D[mask]
        sil = int(out.silhouette_area[oi])
        result.append(InstanceTruth(
            track_id=obj.track_id, class_id=class_id(obj.class_name), class_name=obj.class_name, mask=mask,
            bbox=bbox, area=area, keypoints=kp, keypoints_3d=kp3, centroid_3d=Ro @ ((lo + hi) / 2) + to,
            visible_centroid_3d=pts.mean(axis=0), size_3d=hi - lo, rotation=Ro,
            visible_fraction=float(area / max(sil, area, 1))))
    return result


def render_frame(scene: Scene, camera: CameraModel, R_wc: np.ndarray, C: np.ndarray, effects: CameraEffects,
                 sensor: DepthSensor, rng: np.random.Generator, index: int = 0,
                 stamp_ns: int = DEFAULT_START_STAMP_NS, min_pixels: int = 12, seed: int = 0) -> Frame:
    """Render one frame of ``scene`` and collect its ground truth."""
    out = render(scene, camera, R_wc, C)
    rgb = apply_camera(out.color, effects, rng)
    depth = simulate_depth(out.z, out.normal, out.albedo, camera, sensor, rng)
    pose = np.eye(4)
    pose[:3, :3] = R_wc
    pose[:3, 3] = C
    z = out.z.copy()
    z[~np.isfinite(z)] = np.nan
    instances = _instances(scene, camera, R_wc, C, out, min_pixels)
    return Frame(index=index, stamp_ns=int(stamp_ns), rgb=rgb, depth=depth, depth_gt=z,
                 instance_map=out.instance, instances=instances, camera=camera, camera_pose=pose, seed=seed)


@dataclass
class FrameSetup:
    """Everything random about one independent frame, before rendering: the scene, the
    camera (intrinsics and world-from-camera pose ``R_wc``, ``C``), the camera and
    depth-sensor imperfections, and the generator that draws the per-pixel noise."""

    scene: Scene
    camera: CameraModel
    R_wc: np.ndarray
    C: np.ndarray
    effects: CameraEffects
    sensor: DepthSensor
    rng: np.random.Generator


def frame_setup(seed: int, index: int = 0, width: int = 384, height: int = 288,
                config: SceneConfig | None = None) -> FrameSetup:
    """The random draws behind ``generate_frame(seed, index, ...)`` (for tests and tools
    that need the scene itself, e.g. to re-check the renderer's ground truth)."""
    cfg = config or SceneConfig()
    rng = np.random.default_rng([int(seed), _STREAM_FRAME, int(index)])
    camera = CameraModel.from_fov(width, height, _u(rng, cfg.hfov_deg))
    lay, R_wc, C = sample_scene(rng, camera, cfg)
    effects = sample_effects(rng)
    sensor = DepthSensor.sample(rng)
    return FrameSetup(lay.scene, camera, R_wc, C, effects, sensor, rng)


def generate_frame(seed: int, index: int = 0, width: int = 384, height: int = 288,
                   config: SceneConfig | None = None) -> Frame:
    """An independent random frame (training data); depends only on (seed, index)."""
    cfg = config or SceneConfig()
    s = frame_setup(seed, index, width, height, cfg)
    return render_frame(s.scene, s.camera, s.R_wc, s.C, s.effects, s.sensor, s.rng, index=index,
                        stamp_ns=DEFAULT_START_STAMP_NS + index * 10**8, min_pixels=cfg.min_visible_pixels,
                        seed=seed)


# ------------------------------------------------------------------------- sequences


@dataclass
class _Mover:
    obj: SceneObject
    velocity: np.ndarray  # world (vx, vy), m/s
    yaw_rate: float       # rad/s (not for balls, which roll)
    rolls: bool


@dataclass
class SequenceConfig:
    """Knobs of the sequence mode: camera motion amplitudes (degrees, fraction of the
    viewing distance), how many objects move and how fast (m/s)."""

    scene: SceneConfig = field(default_factory=lambda: SceneConfig(min_objects=3, max_objects=8,
                                                                    table_probability=0.7))
    pan_deg: tuple[float, float] = (6.0, 18.0)
    pan_period_s: tuple[float, float] = (4.0, 10.0)
    tilt_deg: tuple[float, float] = (1.0, 5.0)
    approach: tuple[float, float] = (0.0, 0.35)
    max_moving: int = 2
    speed: tuple[float, float] = (0.03, 0.12)
    exposure_s: float = 0.012


def _camera_at(tau: float, base: dict) -> tuple[np.ndarray, np.ndarray]:
    """Smooth camera pose at time ``tau`` seconds: a head panning (sinusoidal yaw), nodding
    slightly, and approaching the target along a smoothstep over the sequence."""
    s = np.clip(tau / base["duration"], 0.0, 1.0)
    ease = s * s * (3 - 2 * s)
    horiz = base["target"][:2] - base["C0"][:2]
    C = base["C0"] + np.array([*(horiz * base["approach"] * ease), -base["descent"] * ease])
    yaw = base["yaw"] + base["pan"] * np.sin(2 * np.pi * tau / base["pan_period"] + base["phase"]) \
        - base["pan"] * np.sin(base["phase"])
    tilt = base["tilt"] + base["nod"] * np.sin(2 * np.pi * tau / base["nod_period"] + base["phase2"])
    # Approaching the target lowers the line of sight: keep the target near the centre.
    to_t = base["target"] - C
    tilt += np.arctan2(-to_t[2], np.hypot(*to_t[:2])) - base["tilt_to_target0"]
    f = np.array([np.cos(tilt) * np.cos(yaw), np.cos(tilt) * np.sin(yaw), -np.sin(tilt)])
    return look_at(C, C + f, roll=base["roll"]), C


def generate_sequence(seed: int, n_frames: int, fps: float = 15.0, width: int = 640, height: int = 480,
                      config: SequenceConfig | None = None,
                      start_stamp_ns: int = DEFAULT_START_STAMP_NS) -> Iterator[Frame]:
    """Frames of one static scene seen by a moving robot head, some objects moving.

    Yields ``n_frames`` frames at ``fps`` (stamps ``start_stamp_ns + i * 1e9 / fps``).
    Track ids are stable across the sequence (an object keeps its id when it leaves
    and re-enters the view). Frame ``i`` does not depend on ``n_frames``.
    """
    cfg = config or SequenceConfig()
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    rng = np.random.default_rng([int(seed), _STREAM_SEQ_SCENE])
    camera = CameraModel.from_fov(width, height, _u(rng, cfg.scene.hfov_deg))
    lay, R_wc0, C0 = sample_scene(rng, camera, cfg.scene)
    scene = lay.scene
    fwd = R_wc0[:, 2]
    base = {
        "C0": C0, "target": lay.target, "yaw": float(np.arctan2(fwd[1], fwd[0])),
        "tilt": float(np.arcsin(-fwd[2])), "roll": 0.0,
        "pan": np.radians(_u(rng, cfg.pan_deg)), "pan_period": _u(rng, cfg.pan_period_s),
        "phase": float(rng.uniform(0, 2 * np.pi)), "nod": np.radians(_u(rng, cfg.tilt_deg)),
        "nod_period": float(rng.uniform(3.0, 8.0)), "phase2": float(rng.uniform(0, 2 * np.pi)),
        "approach": _u(rng, cfg.approach), "descent": float(rng.uniform(0.0, 0.1)),
        "duration": float(rng.uniform(8.0, 20.0)),
    }
    to_t = lay.target - C0
    base["tilt_to_target0"] = float(np.arctan2(-to_t[2], np.hypot(*to_t[:2])))
    # Never approach so far that the camera would end up inside or touching an object.
    for _ in range(20):
        _, C_end = _camera_at(base["duration"], base)
        if all(np.linalg.norm(C_end - (o.t + [0.0, 0.0, o.bounds()[1][2] / 2])) > 0.3 + 1.5 * o.radius
               for o in scene.objects if o.radius > 0):
            break
        base["approach"] *= 0.7
        base["descent"] *= 0.7
    annotated = [o for o in scene.objects if o.class_name is not None and o.track_id > 0]
    movers = []
    for oi in rng.permutation(len(annotated))[: int(rng.integers(0, cfg.max_moving + 1))]:
        obj = annotated[int(oi)]
        ang = rng.uniform(0, 2 * np.pi)
        speed = _u(rng, cfg.speed)
        movers.append(_Mover(obj, speed * np.array([np.cos(ang), np.sin(ang)]), float(rng.uniform(-0.6, 0.6)),
                             obj.class_name == "ball"))
    effects0 = sample_effects(rng, motion_blur=False)
    sensor = DepthSensor.sample(rng)
    dt = 1.0 / fps
    support = [o for o in scene.objects if o.class_name is not None or o.radius > 0]
    for i in range(int(n_frames)):
        tau = i * dt
        if i > 0:
            for m in movers:
                _step(m, dt, support, lay)
        R_wc, C = _camera_at(tau, base)
        frng = np.random.default_rng([int(seed), _STREAM_SEQ_FRAME, i])
        # Motion blur from the camera's own motion during the exposure.
        R2, C2 = _camera_at(tau + cfg.exposure_s, base)
        p = C + R_wc[:, 2] * 1.0
        a = camera.project((R_wc.T @ (p - C))[None])[0]
        b = camera.project((R2.T @ (p - C2))[None])[0]
        shift = b - a
        effects = replace(effects0, motion_length=float(np.hypot(*shift)),
                          motion_angle=float(np.arctan2(shift[1], shift[0])),
                          exposure=effects0.exposure * (1.0 + 0.03 * np.sin(0.7 * tau)))
        yield render_frame(scene, camera, R_wc, C, effects, sensor, frng, index=i,
                           stamp_ns=start_stamp_ns + int(round(i * 1e9 / fps)),
                           min_pixels=cfg.scene.min_visible_pixels, seed=seed)


def _step(m: _Mover, dt: float, others: list[SceneObject], lay: _Layout) -> None:
    """Advance a moving object by ``dt`` seconds; it bounces off the edge of its support
    surface and off other objects instead of passing through them."""
    obj = m.obj
    new = obj.t.copy()
    new[:2] += m.velocity * dt
    blocked = not _in_area(new, obj.radius, lay) or any(
        o is not obj and np.hypot(*(new[:2] - o.t[:2])) < obj.radius + o.radius + 0.002
        and np.hypot(*(new[:2] - o.t[:2])) < np.hypot(*(obj.t[:2] - o.t[:2]))
        for o in others)
    if blocked:
        m.velocity = -m.velocity
        return
    dist = float(np.linalg.norm(m.velocity) * dt)
    if m.rolls:
        # Spin the sphere about its own centre (the object frame stays upright so the
        # centre keypoint and the contact point stay put): no slip, angle = distance / r.
        ball = obj.parts[0]
        axis_obj = obj.R.T @ np.array([-m.velocity[1], m.velocity[0], 0.0])
        ball.R = rot_axis(axis_obj, dist / ball.params[0]) @ ball.R
    else:
        obj.R = rot_z(m.yaw_rate * dt) @ obj.R
    obj.t = new
