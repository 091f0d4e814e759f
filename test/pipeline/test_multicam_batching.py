"""Several cameras, one model, without DDS: fair newest-frame batching, the batched
network on real ONNX Runtime, per-camera frame processors and transport-loss counting."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from seg_perception.streaming import CameraSlots, SequenceGaps, StageTimes, TwoStageWorkers


# ---------------------------------------------------------------------------- scheduling


def test_a_batch_takes_every_cameras_newest_frame_so_a_fast_camera_cannot_push_out_a_slow_one():
    slots: CameraSlots[int] = CameraSlots(["front", "left", "right"])
    for i in range(10):  # front publishes ten times before the model is free again
        slots.put("front", i)
    slots.put("left", 100)
    assert slots.take_batch(timeout=0.1) == [("front", 9), ("left", 100)]
    assert (slots.received["front"], slots.dropped["front"]) == (10, 9)
    assert (slots.received["left"], slots.dropped["left"]) == (1, 0)
    assert slots.received["right"] == 0 and slots.take_batch(timeout=0.01) == []


def _run_cameras(rates: dict[str, float], batch_seconds: float, duration: float):
    """Cameras publishing at ``rates`` (Hz) into the node's workers with a model that
    takes ``batch_seconds`` per batch whatever its size (as a GPU nearly does)."""
    finished: dict[str, list[int]] = {c: [] for c in rates}
    batch_sizes: list[int] = []
    errors: list[Exception] = []

    def infer(batch):
        batch_sizes.append(len(batch))
        time.sleep(batch_seconds)
        return batch

    workers: TwoStageWorkers = TwoStageWorkers(list(rates), infer, lambda r: finished[r[0]].append(r[1]),
                                               errors.append)
    workers.start()
    stop = threading.Event()

    def camera(name: str, rate: float) -> None:
        i = 0
        t0 = time.monotonic()
        while not stop.is_set():
            workers.put(name, i)
            i += 1
            time.sleep(max(0.0, t0 + i / rate - time.monotonic()))

    threads = [threading.Thread(target=camera, args=item) for item in rates.items()]
    for t in threads:
        t.start()
    time.sleep(duration)
    stop.set()
    for t in threads:
        t.join()
    time.sleep(2 * batch_seconds)
    workers.stop()
    assert not errors
    return finished, batch_sizes, workers


def test_a_slow_camera_is_served_at_its_own_rate_beside_a_fast_one():
    finished, sizes, workers = _run_cameras({"fast": 100.0, "slow": 5.0}, batch_seconds=0.04, duration=2.0)
    slow_sent = workers.slots.received["slow"]
    assert slow_sent >= 8
    assert len(finished["slow"]) >= slow_sent - 1, "the slow camera lost frames to the fast one"
    assert finished["slow"] == sorted(finished["slow"])
    # The fast camera gets the model's rate, its newest frame each time, never more than one batch late.
    assert len(finished["fast"]) >= 0.6 * (2.0 / 0.04)
    assert max(sizes) == 2


def test_cameras_at_equal_rates_are_served_equally_in_batches():
    finished, sizes, _ = _run_cameras({"a": 40.0, "b": 40.0, "c": 40.0}, batch_seconds=0.05, duration=2.0)
    counts = [len(v) for v in finished.values()]
    assert min(counts) >= 0.8 * max(counts), counts
    assert np.mean(sizes) > 2.0, "frames of several cameras should share a batch"


def test_one_failing_result_does_not_keep_the_batchs_other_cameras_from_being_finished():
    finished: list[str] = []
    errors: list[Exception] = []

    def finish(result):
        if result[0] == "bad":
            raise ValueError("broken frame")
        finished.append(result[0])

    workers: TwoStageWorkers = TwoStageWorkers(["bad", "good"], lambda batch: batch, finish, errors.append)
    workers.start()
    for _ in range(3):
        workers.put("bad", 0)
        workers.put("good", 0)
        time.sleep(0.1)
    workers.stop()
    assert finished.count("good") == 3 and len(errors) == 3


def test_stage_times_report_p50_and_p95_per_stage():
    times = StageTimes()
    for ms in range(1, 101):
        times.add("network", ms / 1e3)
        times.add("decode", 0.002)
    values = times.values()
    assert float(values["stage_network_p50_ms"]) == pytest.approx(50.5, abs=0.1)
    assert float(values["stage_network_p95_ms"]) == pytest.approx(95.05, abs=0.1)
    assert float(values["stage_decode_p95_ms"]) == pytest.approx(2.0)


# ---------------------------------------------------------------------------- transport loss


def test_sequence_gaps_count_lost_messages_per_publisher():
    gaps = SequenceGaps()
    assert not gaps.known
    a, b = {"data": b"A" * 16}, {"data": b"B" * 16}
    for seq in (1, 2, 5, 6, 10):  # 3, 4, 7, 8, 9 lost
        gaps.add(a, seq)
    for seq in (1, 2, 3):  # another publisher on the topic: its own numbering
        gaps.add(b, seq)
    assert gaps.known and (gaps.sent, gaps.lost) == (13, 5)
    assert gaps.since_last_check() == (13, 5) and gaps.since_last_check() == (0, 0)
    gaps.add(a, 1)  # the camera restarted: numbering starts again, nothing lost
    assert gaps.lost == 5
    gaps.add(a, 0)  # an RMW without sequence numbers reports 0: ignored
    assert gaps.sent == 14


# ---------------------------------------------------------------------------- the batched network


@pytest.fixture(scope="module")
def known_answer(tmp_path_factory):
    """The known-answer model exported with a symbolic batch dimension, on ONNX Runtime."""
    pytest.importorskip("torch", reason="writing the known-answer ONNX graph needs torch")
    from seg_perception.models.known_answer import write_known_answer_model
    from seg_perception.pipeline import load_pipeline
    from seg_perception import params

    path = write_known_answer_model(tmp_path_factory.mktemp("dynamic"), dynamic_batch=True)
    model = load_pipeline({**params.defaults(), "model_path": str(path), "backend": "onnxruntime"})
    assert model.backend._batch_dim is None, "the graph's batch dimension should be symbolic"
    yield model
    model.close()


def _images():
    rng = np.random.default_rng(3)
    # Three cameras, three resolutions: pre-processing per frame, one batch at network size.
    return [rng.integers(0, 255, size=shape, dtype=np.uint8) for shape in ((480, 640, 3), (240, 320, 3), (720, 1280, 3))]


def test_a_batch_of_cameras_at_different_resolutions_gives_each_its_own_result(known_answer):
    images = _images()
    times: dict[str, float] = {}
    batched = known_answer.forward_batch(images, times)
    assert times["network"] > 0 and times["preprocess"] > 0
    for rgb, raw in zip(images, batched):
        alone = known_answer.forward(rgb)
        assert set(raw) == set(alone)
        for name in alone:
            assert raw[name].shape == alone[name].shape and raw[name].shape[0] == 1
            np.testing.assert_allclose(raw[name], alone[name], rtol=1e-5, atol=1e-5)


def test_the_shipped_model_with_its_fixed_batch_of_one_still_serves_a_batch():
    """Its ONNX input is [1, 288, 384, 3]: the backend runs the batch frame by frame."""
    pytest.importorskip("onnxruntime")
    from seg_perception.pipeline import load_pipeline
    from seg_perception import params

    model = load_pipeline({**params.defaults(), "backend": "onnxruntime", "threads": 1})
    try:
        images = _images()[:2]
        batched = model.forward_batch(images)
        assert len(batched) == 2
        for rgb, raw in zip(images, batched):
            alone = model.forward(rgb)
            for name in alone:
                np.testing.assert_allclose(raw[name], alone[name], rtol=1e-4, atol=1e-4)
    finally:
        model.close()


def test_each_camera_keeps_its_own_tracker_while_sharing_one_model(known_answer):
    from seg_perception import params
    from seg_perception.pipeline import FrameProcessor

    values = {**params.defaults(), "tracking_min_hits": 1}
    front, left = FrameProcessor(values), FrameProcessor(values)
    for proc in (front, left):
        proc.attach(known_answer)
    images = _images()[:2]
    for k in range(3):
        inferred = FrameProcessor.forward_together([front, left], images)
        for proc, inf in zip((front, left), inferred):
            assert inf is not None and inf.model is known_answer
            proc.detect(inf, stamp_ns=k * 10**8)
    assert front.tracking is not left.tracking
    detached = FrameProcessor(values)
    assert FrameProcessor.forward_together([detached, front], images)[0] is None
