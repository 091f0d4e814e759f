"""What the node adds after the network (pipeline.tracking, pipeline.depth): ByteTrack's publish rule,
tracker restarts, intrinsics of a registered depth stream at another resolution, 3D of a
frame, point cloud ids, and pairing colour with depth that arrives late."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from seg_perception import params
from seg_perception.core.depth3d import CameraIntrinsics, Depth3DParams, DepthSizeError
from seg_perception.pipeline.depth import DepthPairing, cloud_points, depth3d_params_from, frame_3d, scaled_intrinsics
from seg_perception.pipeline.tracking import TrackingStage, select, tracker_params_from
from seg_perception.core.grasp import grasp_keypoints
from seg_perception.core.tracking import TrackerParams
from seg_perception.core.types import CroppedMask, Detections

STEP_NS = 66_666_667  # 15 fps


def _dets(boxes, scores, class_ids=None) -> Detections:
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = len(b)
    return Detections(
        boxes=b,
        scores=np.asarray(scores, np.float32),
        class_ids=np.asarray(class_ids if class_ids is not None else [0] * n, np.int32),
        masks=[CroppedMask(int(x0), int(y0), np.ones((int(y1 - y0), int(x1 - x0)), np.uint8)) for x0, y0, x1, y1 in b],
        keypoints=np.zeros((n, 0, 3), np.float32),
    )


A, B = [10, 10, 60, 60], [200, 100, 260, 180]


# ---------------------------------------------------------------------------- tracking and the publish rule


def test_post_processing_keeps_candidates_down_to_the_low_score_only_with_tracking():
    assert TrackingStage.detection_threshold(0.3, None) == 0.3
    assert TrackingStage.detection_threshold(0.3, TrackerParams(low_score=0.1)) == pytest.approx(0.1)
    assert TrackingStage.detection_threshold(0.05, TrackerParams(low_score=0.1)) == pytest.approx(0.05)


def test_a_weak_detection_is_published_only_while_it_extends_a_track():
    stage = TrackingStage(TrackerParams())
    first = stage.update(_dets([A, B], [0.9, 0.9]), 0, (480, 640), score_threshold=0.3)
    assert first.track_ids.tolist() == [1, 2]  # the first frame confirms at once
    # A drops to 0.2 (below score_threshold, above the low score): it keeps its track and is published.
    # A weak detection elsewhere extends nothing and is not published.
    out = stage.update(_dets([A, B, [400, 300, 450, 350]], [0.2, 0.9, 0.2]), STEP_NS, (480, 640), score_threshold=0.3)
    assert out.track_ids.tolist() == [1, 2]
    np.testing.assert_allclose(out.scores, [0.2, 0.9])


def test_a_strong_new_object_is_published_untracked_until_it_is_confirmed():
    stage = TrackingStage(TrackerParams(min_hits=2))
    stage.update(_dets([A], [0.9]), 0, (480, 640), 0.3)
    out = stage.update(_dets([A, B], [0.9, 0.9]), STEP_NS, (480, 640), 0.3)
    assert out.track_ids.tolist() == [1, 0]  # B is tentative: published (score >= 0.3) with id 0
    out = stage.update(_dets([A, B], [0.9, 0.9]), 2 * STEP_NS, (480, 640), 0.3)
    assert out.track_ids.tolist() == [1, 2]


def test_raising_the_score_threshold_stops_births_but_tracks_continue_through_weak_detections():
    stage = TrackingStage(TrackerParams(new_track_score=0.6))
    # 0.7 would start a track at the default threshold; at 0.8 it is never published.
    for i in range(3):
        assert len(stage.update(_dets([A], [0.7]), i * STEP_NS, (480, 640), score_threshold=0.8)) == 0
    out = stage.update(_dets([A, B], [0.7, 0.9]), 3 * STEP_NS, (480, 640), score_threshold=0.8)
    assert out.track_ids.tolist() == [0] and out.scores.tolist() == pytest.approx([0.9])  # B: tentative
    out = stage.update(_dets([A, B], [0.7, 0.9]), 4 * STEP_NS, (480, 640), score_threshold=0.8)
    assert out.track_ids.tolist() == [1] and out.scores.tolist() == pytest.approx([0.9])  # B confirmed, A never
    # The track of B goes on with a 0.7 detection (below the threshold).
    out = stage.update(_dets([B], [0.7]), 5 * STEP_NS, (480, 640), score_threshold=0.8)
    assert out.track_ids.tolist() == [1]


def test_a_new_image_size_or_new_parameters_start_over_but_never_reuse_an_id():
    stage = TrackingStage(TrackerParams())
    assert stage.update(_dets([A], [0.9]), 0, (480, 640), 0.3).track_ids.tolist() == [1]
    # Same box in a 320x240 stream: another camera, a new track.
    assert stage.update(_dets([A], [0.9]), STEP_NS, (240, 320), 0.3).track_ids.tolist() == [2]
    stage.reconfigure(TrackerParams(mask_weight=0.0))
    assert stage.params.mask_weight == 0.0
    assert stage.update(_dets([A], [0.9]), 2 * STEP_NS, (240, 320), 0.3).track_ids.tolist() == [3]


def test_select_keeps_the_chosen_instances_in_order():
    d = _dets([A, B, [0, 0, 5, 5]], [0.9, 0.5, 0.1])
    d.track_ids[:] = [4, 5, 6]
    s = select(d, np.array([True, False, True]))
    assert s.track_ids.tolist() == [4, 6] and s.scores.tolist() == pytest.approx([0.9, 0.1])
    assert [m.x for m in s.masks] == [10, 0] and s.keypoints.shape == (2, 0, 3)


def test_parameter_groups_refuse_bad_combinations_with_the_reason():
    values = params.defaults()
    assert tracker_params_from(values) == TrackerParams()
    assert depth3d_params_from(values) == Depth3DParams()
    with pytest.raises(ValueError, match="low_score"):
        tracker_params_from({**values, "tracking_low_score": 0.8, "tracking_high_score": 0.5})
    with pytest.raises(ValueError, match="min_depth < max_depth"):
        depth3d_params_from({**values, "depth_min": 5.0, "depth_max": 2.0})
    assert "multiple of 2" in params.PARAMETERS_BY_NAME["depth_keypoint_window"].check(4)


# ---------------------------------------------------------------------------- intrinsics and 3D


K = CameraIntrinsics(fx=500.0, fy=500.0, cx=319.5, cy=239.5)


def test_a_half_resolution_camera_info_scales_to_the_colour_image():
    half = [250.0, 0.0, 159.5, 0.0, 250.0, 119.5, 0.0, 0.0, 1.0]
    assert scaled_intrinsics(half, (320, 240), (640, 480)) == K
    with pytest.raises(ValueError, match="aspect ratio"):
        scaled_intrinsics(half, (320, 180), (640, 480))
    with pytest.raises(ValueError, match="focal lengths must be positive"):
        scaled_intrinsics([0.0] * 9, (640, 480), (640, 480))
    with pytest.raises(ValueError, match="cannot describe"):
        scaled_intrinsics(half, (0, 0), (640, 480))


def _plane_scene(z: float = 1.0):
    """A 80x60 px object at depth z in front of a wall 1 m behind it, 640x480."""
    depth = np.full((480, 640), z + 1.0, np.float32)
    depth[200:260, 300:380] = z
    d = _dets([[300, 200, 380, 260]], [0.9])
    return d, depth


def test_frame_3d_places_instances_and_grasp_points_from_registered_depth_at_any_resolution():
    d, depth = _plane_scene(1.0)
    grasp = grasp_keypoints(d.masks).keypoints
    full = frame_3d(d, depth, K, (480, 640), Depth3DParams(), grasp)
    assert full.instances.valid.tolist() == [True]
    # The object's pixel centres 300..379, 200..259 back-projected at 1 m.
    np.testing.assert_allclose(full.instances.centroids[0], [(339.5 - 319.5) / 500, (229.5 - 239.5) / 500, 1.0],
                               atol=2e-3)
    assert full.grasp_valid.all() and np.allclose(full.grasp[0, :, 2], 1.0)
    # Grasp width in metres: the mask is 60 px high (the short axis) at 1 m, fx = 500.
    assert np.linalg.norm(full.grasp[0, 1] - full.grasp[0, 2]) == pytest.approx(60 / 500, abs=0.004)
    half = frame_3d(d, depth[::2, ::2], K, (480, 640), Depth3DParams(), grasp)
    np.testing.assert_allclose(half.instances.centroids, full.instances.centroids, atol=3e-3)
    assert half.depth.shape == (480, 640)
    with pytest.raises(DepthSizeError, match="aspect"):
        frame_3d(d, depth[:360], K, (480, 640), Depth3DParams(), grasp)


def test_frame_3d_never_invents_depth_where_there_is_none():
    d, depth = _plane_scene(1.0)
    holes = depth.copy()
    holes[200:230, 300:380] = np.nan
    holes[230:245, 300:380] = np.inf
    holes[245:260, 300:380] = 0.0
    out = frame_3d(d, holes, K, (480, 640), Depth3DParams(), grasp_keypoints(d.masks).keypoints)
    assert out.instances.valid.tolist() == [False] and out.instances.num_points.tolist() == [0]
    assert np.isnan(out.instances.centroids).all()
    assert not out.grasp_valid[0, 0]  # the mask centroid: no valid depth in its window


def test_a_grasp_point_whose_window_sees_only_the_background_is_not_trusted():
    d, depth = _plane_scene(1.0)
    grasp = grasp_keypoints(d.masks).keypoints  # the object is 80x60: grasp_a on its top edge (y 200)
    assert abs(grasp[0, 1, 1] - 199.5) < 1.0
    holed = depth.copy()
    holed[195:206, 300:380] = np.nan  # a depth hole along the top silhouette, as stereo sensors have
    holed[195:200, 300:380] = 2.0     # ... except the wall just above it
    out = frame_3d(d, holed, K, (480, 640), Depth3DParams(), grasp)
    assert out.instances.valid.tolist() == [True]
    assert out.grasp_valid[0].tolist() == [True, False, True] and np.isnan(out.grasp[0, 1]).all()
    assert abs(out.grasp[0, 2, 2] - 1.0) < 1e-3


def test_cloud_points_carry_track_ids_and_zero_for_an_untracked_instance():
    depth = np.full((480, 640), 2.0, np.float32)
    d = _dets([A, B], [0.9, 0.9], class_ids=[3, 1])
    d.track_ids[:] = [7, 0]
    pts = cloud_points(d, depth, K, Depth3DParams(), stride=1, tracking=True)
    ids = {int(i): int(c) for i, c in pts[:, 3:5]}
    assert ids == {7: 3, 0: 1}
    assert np.count_nonzero(pts[:, 3] == 7) == 50 * 50 and np.count_nonzero(pts[:, 3] == 0) == 60 * 80
    d.track_ids[:] = 0  # tracking off: no ids
    off = cloud_points(d, depth, K, Depth3DParams(), stride=2, tracking=False)
    assert set(np.unique(off[:, 3]).astype(int)) == {1, 2}  # index + 1
    assert np.isfinite(off).all() and np.allclose(off[:, 2], 2.0)


# ---------------------------------------------------------------------------- pairing colour with depth


def test_pairing_without_a_depth_stream_never_waits():
    pairing: DepthPairing[str] = DepthPairing(slop_ns=20_000_000)
    t0 = time.monotonic()
    result = pairing.pair(1_000, deadline=time.monotonic() + 5.0)
    assert result.depth is None and not result.live and time.monotonic() - t0 < 0.5


def test_depth_arriving_after_the_colour_frame_is_waited_for_until_the_deadline():
    pairing: DepthPairing[str] = DepthPairing(slop_ns=20_000_000)
    pairing.add(0, "depth 0")  # the stream is live
    colour = 66_000_000
    timer = threading.Timer(0.1, pairing.add, args=(colour + 8_000_000, "depth 1"))
    timer.start()
    result = pairing.pair(colour, deadline=time.monotonic() + 5.0)
    timer.join()
    assert result.depth == "depth 1" and result.live
    # Nothing within the slop and the deadline passes: None, live, newest stamp for the report.
    t0 = time.monotonic()
    result = pairing.pair(500_000_000, deadline=time.monotonic() + 0.1)
    assert result.depth is None and result.live and result.newest_ns == colour + 8_000_000
    assert 0.08 < time.monotonic() - t0 < 1.0


def test_liveness_is_judged_in_stamp_time_not_wall_time():
    pairing: DepthPairing[str] = DepthPairing(slop_ns=20_000_000, live_s=1.0)
    pairing.add(0, "depth 0")
    # A lockstep replay: the next colour frame comes late in wall time but 66 ms later in stamps.
    assert pairing.pair(66_000_000, deadline=time.monotonic()).live
    # The depth camera stopped 5 s of stamps ago: nothing to wait for.
    t0 = time.monotonic()
    assert not pairing.pair(5_000_000_000, deadline=time.monotonic() + 5.0).live
    assert time.monotonic() - t0 < 0.5


def test_no_wait_once_the_depth_stream_has_passed_the_colour_stamp():
    pairing: DepthPairing[str] = DepthPairing(slop_ns=20_000_000)
    pairing.add(400_000_000, "depth stamped by another clock")
    t0 = time.monotonic()
    result = pairing.pair(0, deadline=time.monotonic() + 5.0)
    assert result.depth is None and result.live and time.monotonic() - t0 < 0.5


def test_the_nearer_of_the_early_and_late_match_wins_and_close_stops_a_wait():
    pairing: DepthPairing[str] = DepthPairing(slop_ns=20_000_000)
    pairing.add(95_000_000, "early, 5 ms")
    early = pairing.early(100_000_000)
    pairing.add(101_000_000, "late, 1 ms")
    assert pairing.pair(100_000_000, time.monotonic(), early).depth == "late, 1 ms"
    assert pairing.pair(100_000_000, time.monotonic(), (99_900_000, "held, 0.1 ms")).depth == "held, 0.1 ms"
    threading.Timer(0.1, pairing.close).start()
    t0 = time.monotonic()
    assert pairing.pair(900_000_000, time.monotonic() + 5.0).depth is None
    assert time.monotonic() - t0 < 2.0
    pairing.reset()
    assert len(pairing) == 0


# ---------------------------------------------------------------------------- matching depth to a colour stamp


def test_synchronizer_pairs_the_nearest_depth_within_the_slop():
    sync: DepthPairing[str] = DepthPairing(slop_ns=10_000_000, buffer_size=3)
    assert sync.match(0) is None
    for i, s in enumerate([100_000_000, 133_000_000, 166_000_000]):
        sync.add(s, f"d{i}")
    assert sync.match(135_000_000) == "d1"
    assert sync.match_stamped(160_000_000) == (166_000_000, "d2")
    assert sync.match(150_000_000) is None  # 16 ms from both: beyond the slop
    sync.add(200_000_000, "d3")               # evicts d0 (buffer of 3)
    assert sync.match(100_000_000) is None and len(sync) == 3


def test_synchronizer_prefers_the_newer_depth_on_a_tie_and_resets_on_time_jumps():
    sync: DepthPairing[str] = DepthPairing(slop_ns=5, buffer_size=10, reset_after_ns=1000)
    sync.add(10, "old")
    sync.add(20, "new")
    assert sync.match(15) == "new"
    sync.add(10_000, "later")
    sync.add(5, "after loop")  # far in the past: the bag looped
    assert len(sync) == 1 and sync.match(5) == "after loop"
    with pytest.raises(ValueError):
        DepthPairing(slop_ns=-1)
