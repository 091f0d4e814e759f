"""The synthetic renderer's ground truth is exact and self-consistent."""

from __future__ import annotations

import numpy as np
import pytest

from seg_perception.synth.classes import INTERIOR_KEYPOINTS
from seg_perception.synth import (CLASS_KEYPOINTS, CLASS_NAMES, KEYPOINT_NAMES, NUM_KEYPOINTS, SKELETON,
                                  CameraModel, generate_frame)
from seg_perception.synth.objects import BUILDERS, SceneObject, build_object
from seg_perception.synth.primitives import intersect
from seg_perception.synth.render import Light, Plane, Scene, render
from seg_perception.synth.scene import frame_setup
from seg_perception.synth.textures import Material, pooled_bank

W, H = 160, 120
SEEDS = [(3, 0), (3, 1), (8, 2), (21, 5)]


@pytest.fixture(scope="module")
def frames():
    return [generate_frame(seed, index, W, H) for seed, index in SEEDS]


def _scene_of(seed: int, index: int):
    """The scene, camera and pose behind ``generate_frame(seed, index, W, H)``."""
    s = frame_setup(seed, index, W, H)
    return s.scene, s.camera, s.R_wc, s.C


def _depth_of(obj: SceneObject, camera: CameraModel, R_wc: np.ndarray, C: np.ndarray) -> np.ndarray:
    d = camera.ray_directions().reshape(-1, 3).astype(np.float64)
    R_cw = R_wc.T
    best = np.full(len(d), np.inf)
    for p in obj.parts:
        R = R_cw @ obj.R @ p.R
        t = R_cw @ (obj.R @ p.t + obj.t - C)
        best = np.minimum(best, intersect(p.kind, p.params, -R.T @ t, d @ R, attrs=False).t)
    return best.reshape(camera.height, camera.width)


def test_same_seed_gives_identical_frames():
    a, b = generate_frame(5, 3, W, H), generate_frame(5, 3, W, H)
    assert np.array_equal(a.rgb, b.rgb)
    assert np.array_equal(a.depth, b.depth, equal_nan=True)
    assert np.array_equal(a.depth_gt, b.depth_gt, equal_nan=True)
    assert np.array_equal(a.instance_map, b.instance_map)
    assert [i.track_id for i in a.instances] == [i.track_id for i in b.instances]
    for x, y in zip(a.instances, b.instances):
        assert np.array_equal(x.keypoints, y.keypoints)
        assert np.array_equal(x.centroid_3d, y.centroid_3d)


def test_different_seed_or_index_gives_different_frames():
    a = generate_frame(5, 3, W, H)
    assert not np.array_equal(a.rgb, generate_frame(6, 3, W, H).rgb)
    assert not np.array_equal(a.rgb, generate_frame(5, 4, W, H).rgb)


def test_scene_reconstruction_matches_generate_frame():
    # Guards the helper the exactness tests below rely on.
    scene, camera, R_wc, C = _scene_of(*SEEDS[0])
    frame = generate_frame(*SEEDS[0], W, H)
    assert camera == frame.camera
    assert np.allclose(frame.camera_pose[:3, :3], R_wc) and np.allclose(frame.camera_pose[:3, 3], C)


@pytest.mark.parametrize("seed,index", SEEDS)
def test_mask_is_exactly_where_the_object_is_the_nearest_surface(seed, index):
    scene, camera, R_wc, C = _scene_of(seed, index)
    frame = generate_frame(seed, index, W, H)
    z = np.where(np.isfinite(frame.depth_gt), frame.depth_gt, np.inf)
    tol = 1e-4 * np.where(np.isfinite(z), z, 1.0) + 1e-5
    checked = 0
    for obj in scene.objects:
        if obj.class_name is None:
            continue
        zo = _depth_of(obj, camera, R_wc, C)
        mask = frame.instance_map == obj.track_id
        # On its mask the object's own surface is what the z-buffer holds ...
        assert np.all(np.abs(zo[mask] - z[mask]) <= tol[mask])
        # ... and nowhere else is it in front of what the z-buffer holds.
        assert not np.any(zo[~mask] < z[~mask] - tol[~mask])
        checked += int(mask.sum())
    assert checked > 0


def test_instance_masks_are_disjoint_and_match_the_instance_map(frames):
    for f in frames:
        seen = np.zeros((H, W), dtype=int)
        for inst in f.instances:
            assert inst.mask.dtype == bool and inst.mask.shape == (H, W)
            assert np.array_equal(inst.mask, f.instance_map == inst.track_id)
            assert inst.area == int(inst.mask.sum()) >= 1
            seen += inst.mask
        assert seen.max() <= 1
        assert len({i.track_id for i in f.instances}) == len(f.instances)


def test_bbox_is_the_tight_extent_of_the_mask(frames):
    for f in frames:
        for inst in f.instances:
            ys, xs = np.nonzero(inst.mask)
            assert inst.bbox == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)


def test_depth_in_mask_lies_on_the_object(frames):
    K_inv = None
    for f in frames:
        K_inv = np.linalg.inv(f.camera.K)
        for inst in f.instances:
            ys, xs = np.nonzero(inst.mask)
            zc = f.depth_gt[ys, xs].astype(np.float64)
            assert np.all(np.isfinite(zc))
            pts = (K_inv @ np.stack([xs, ys, np.ones_like(xs)]).astype(np.float64)).T * zc[:, None]
            local = (pts - inst.centroid_3d) @ inst.rotation  # object axes, centred on its box
            assert np.all(np.abs(local) <= inst.size_3d / 2 + 1e-3)
            # The sensor adds noise and holes but stays near the surface where it reads.
            zs = f.depth[ys, xs]
            ok = np.isfinite(zs)
            sigma = 0.001 + 0.004 * zc[ok] ** 2
            quant = zc[ok] ** 2 / (f.camera.fx * 0.05) * 0.125
            assert np.all(np.abs(zs[ok] - zc[ok]) <= 6 * sigma + quant + 0.01)


def test_sensor_depth_has_holes_but_mostly_reads(frames):
    for f in frames:
        finite_gt = np.isfinite(f.depth_gt)
        read = np.isfinite(f.depth)
        assert not np.any(read & ~finite_gt)  # no reading where there is no surface
        assert 0.5 < read.sum() / max(finite_gt.sum(), 1) < 1.0
        assert f.depth.dtype == np.float32 and f.depth_gt.dtype == np.float32


def test_centroid_projects_inside_the_box_of_unoccluded_objects(frames):
    checked = 0
    for f in frames:
        for inst in f.instances:
            corners = np.array([[sx, sy, sz] for sx in (-.5, .5) for sy in (-.5, .5) for sz in (-.5, .5)])
            pts = (corners * inst.size_3d) @ inst.rotation.T + inst.centroid_3d
            uv = f.camera.project(pts)
            in_view = np.all((uv >= 0) & (uv <= [W - 1, H - 1]))
            x, y, w, h = inst.bbox
            for c in (inst.visible_centroid_3d,) + ((inst.centroid_3d,) if in_view and inst.visible_fraction > 0.98
                                                     else ()):
                u, v = f.camera.project(c[None])[0]
                assert x - 1.0 <= u <= x + w and y - 1.0 <= v <= y + h
                checked += 1
    assert checked > 0


def test_keypoints_follow_the_class_tables_and_the_image_bounds(frames):
    for f in frames:
        for inst in f.instances:
            own = set(CLASS_KEYPOINTS[inst.class_name])
            assert inst.keypoints.shape == (NUM_KEYPOINTS, 3)
            for k in range(NUM_KEYPOINTS):
                x, y, v = inst.keypoints[k]
                if k not in own:
                    assert v == 0 and x == 0 and y == 0 and np.all(np.isnan(inst.keypoints_3d[k]))
                    continue
                u, w = f.camera.project(inst.keypoints_3d[k][None].astype(np.float64))[0]
                inside = inst.keypoints_3d[k][2] > 0 and -0.5 <= u < W - 0.5 and -0.5 <= w < H - 0.5
                assert (v > 0) == inside
                if v > 0:
                    assert abs(x - u) < 1e-3 and abs(y - w) < 1e-3


def test_keypoint_visibility_agrees_with_masks_and_depth():
    # Visibility is decided by an exact ray through the keypoint; pixels can only
    # approximate that, so check the pixel-level consequences on most keypoints.
    agree = total = 0
    for seed in range(8):
        f = generate_frame(100 + seed, 0, W, H)
        for inst in f.instances:
            for k in CLASS_KEYPOINTS[inst.class_name]:
                x, y, v = inst.keypoints[k]
                if v == 0:
                    continue
                u, w = min(max(int(round(x)), 0), W - 1), min(max(int(round(y)), 0), H - 1)
                zk = float(inst.keypoints_3d[k][2])
                win = (slice(max(w - 1, 0), w + 2), slice(max(u - 1, 0), u + 2))
                own_near = bool(inst.mask[win].any())
                if KEYPOINT_NAMES[k] in INTERIOR_KEYPOINTS:  # seen when its object is seen there
                    ok = (v == 2) == bool(inst.mask[w, u])
                elif v == 2:  # seen: its own surface is there, or at least nothing nearer
                    ok = own_near or bool(np.nanmax(f.depth_gt[win]) >= zk - 0.01)
                else:  # occluded: something nearer covers the point's pixel neighbourhood
                    ok = bool(np.nanmin(f.depth_gt[win]) < zk - 0.002)
                agree += ok
                total += 1
    assert total > 40
    assert agree / total > 0.95


def test_box_corners_run_clockwise_from_the_lowest():
    checked = 0
    for seed in range(40):
        f = generate_frame(200 + seed, 0, W, H)
        for inst in f.instances:
            if inst.class_name != "box":
                continue
            kp = inst.keypoints[CLASS_KEYPOINTS["box"]]
            if np.any(kp[:, 2] == 0):
                continue
            x, y = kp[:, 0], kp[:, 1]
            assert np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y) >= -1e-6  # clockwise, y down
            assert y[0] == y.max()
            checked += 1
    assert checked >= 3


def test_class_tables_are_consistent():
    assert len(CLASS_NAMES) >= 6 and len(set(KEYPOINT_NAMES)) == len(KEYPOINT_NAMES)
    for a, b in SKELETON:
        assert any(a in v and b in v for v in CLASS_KEYPOINTS.values())
    assert set(BUILDERS) == set(CLASS_NAMES)


@pytest.mark.parametrize("name", CLASS_NAMES)
def test_every_class_rests_on_the_surface_with_its_keypoints_on_or_in_it(name):
    rng = np.random.default_rng(1)
    for _ in range(5):
        obj = build_object(name, rng, pooled_bank(0))
        lo, hi = obj.bounds()
        assert abs(lo[2]) < 2e-3  # resting on z = 0
        assert len(obj.keypoints) == len(CLASS_KEYPOINTS[name]) == len(obj.kp_interior)
        assert np.all(obj.keypoints >= lo - 1e-6) and np.all(obj.keypoints <= hi + 1e-6)


def test_a_sphere_renders_with_exact_depth_and_radius():
    # One sphere of radius 0.1 m straight ahead at 1 m on a black background.
    camera = CameraModel(81, 61, 100.0, 100.0, 40.0, 30.0)
    from seg_perception.synth.objects import Part

    ball = SceneObject("ball", [Part("ellipsoid", (0.1, 0.1, 0.1), Material())], track_id=1)
    R_wc = np.eye(3)
    ball.R, ball.t = np.eye(3), np.array([0.0, 0.0, 1.0])
    far = Plane(np.array([0.0, 0.0, -1.0]), -5.0, np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), Material())
    scene = Scene([ball], [far], Light(np.array([0.0, 0.0, -1.0]), np.ones(3, np.float32), np.zeros(3, np.float32)),
                  pooled_bank(0))
    out = render(scene, camera, R_wc, np.zeros(3))
    assert out.z[30, 40] == pytest.approx(0.9, abs=1e-6)
    assert out.instance[30, 40] == 1 and out.instance[0, 0] == 0
    assert out.z[0, 0] == pytest.approx(5.0, rel=1e-6)
    # Silhouette radius: tangent rays at angle asin(0.1), i.e. 100 * tan(asin(0.1)) px.
    r_px = 100.0 * np.tan(np.arcsin(0.1))
    assert out.instance[30, 40 + int(np.floor(r_px))] == 1 and out.instance[30, 40 + int(np.ceil(r_px))] == 0
