"""`seg-perception regress --ray`: recordings as tasks on a local Ray with two workers give
the serial run's outputs byte for byte, also when a worker dies mid-recording; a recording
that fails among good ones is reported as the serial run reports it, the others kept."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from support.regress_testlib import image_msg, run_regress, tree_digest, write_bag

pytest.importorskip("onnxruntime")
needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="Ray is not installed (pip install 'seg_perception[fleet]')")


def small_recording(path: Path, seed: int, frames: int = 4, bad_frame: int | None = None) -> Path:
    """A tiny rgb8 recording of moving bright squares (so the known-answer model tracks
    something); ``bad_frame``: that frame's pixels are cut short (it cannot be decoded)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 120, (120, 160, 3), dtype=np.uint8)
    msgs = []
    for i in range(frames):
        rgb = base.copy()
        x, y = 10 + 12 * i + seed, 20 + 5 * i
        rgb[y:y + 30, x:x + 30] = 250
        t = 1_000_000_000 * (i + 1) + seed
        msgs.append(("/cam/image", "sensor_msgs/msg/Image", t,
                     image_msg(rgb, t, data=bytes(100) if i == bad_frame else None)))
    return write_bag(path, msgs)


def outputs_of(out: Path) -> dict[str, str]:
    """sha256 of every frames file and output bag file of a run (the manifest has the time)."""
    return {k: v for k, v in tree_digest(out / "run").items() if not k.startswith("manifest")}


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("ray_recordings")
    return [small_recording(root / f"rec{i}", seed=i, frames=3 + i) for i in range(4)]


@pytest.fixture(scope="module")
def serial_golden(tmp_path_factory, recordings, known_answer_model) -> Path:
    """The serial run of ``recordings``, as the golden run (and its outputs to compare bytes with)."""
    from seg_perception.tools.regress import main

    root = tmp_path_factory.mktemp("ray_serial")
    code = main([*map(str, recordings), "--golden", str(root / "golden"), "--model", str(known_answer_model),
                 "--update-golden", "--out", str(root / "out"), "--no-progress"])
    assert code == 0
    return root / "golden"


@pytest.fixture(scope="module")
def shared_ray(tmp_path_factory):
    """One local Ray (2 CPUs) for the fault tests, with the fault drill armed by removing its
    marker file (workers read the variable from the environment Ray was started with)."""
    import ray

    marker = tmp_path_factory.mktemp("drill") / "worker_killed"
    marker.write_text("disarmed")
    os.environ["SEG_PERCEPTION_RAY_FAULT_DRILL"] = str(marker)
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        yield marker
    finally:
        ray.shutdown()
        os.environ.pop("SEG_PERCEPTION_RAY_FAULT_DRILL", None)


@needs_ray
def test_two_local_workers_give_the_serial_outputs_byte_for_byte(recordings, serial_golden, known_answer_model,
                                                                  tmp_path, capsys):
    import ray

    assert not ray.is_initialized()  # the command starts its own local Ray, and stops it
    code, stdout, err = run_regress(capsys, *recordings, "--golden", serial_golden, "--model", known_answer_model,
                                    "--out", tmp_path / "out", "--ray", "--ray-workers", 2)
    assert code == 0, stdout + err
    assert not ray.is_initialized()
    assert outputs_of(tmp_path / "out") == {k: v for k, v in tree_digest(serial_golden).items()
                                            if not k.startswith("manifest")}
    assert "MATCH: " in stdout and "ray: 2 worker(s), 2 model load(s)" in stdout
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["ray"]["workers"] == 2 and report["ray"]["model_loads"] == 2
    assert [r["key"] for r in report["ray"]["recordings"]] == ["rec0", "rec1", "rec2", "rec3"]
    assert len({r["worker"] for r in report["ray"]["recordings"]}) == 2  # both workers took recordings
    run = json.loads((tmp_path / "out" / "run" / "manifest.json").read_text())
    golden = json.loads((serial_golden / "manifest.json").read_text())
    assert run["mode"] == "offline" and run["params"] == golden["params"] and run["bags"] == golden["bags"]
    assert run["model"] == golden["model"] and run["backend"] == golden["backend"]


@needs_ray
def test_a_worker_that_dies_is_restarted_and_the_outputs_do_not_change(recordings, serial_golden, known_answer_model,
                                                                       shared_ray, tmp_path, capsys):
    shared_ray.unlink()  # armed: the first worker to process a frame ends its own process
    # (--ray right before the recordings: they are recordings, not a cluster address)
    code, stdout, err = run_regress(capsys, "--ray", *recordings, "--golden", serial_golden, "--model",
                                    known_answer_model, "--out", tmp_path / "out", "--ray-workers", 2)
    assert code == 0, stdout + err
    assert shared_ray.read_text().startswith("worker ")  # a worker did die
    assert outputs_of(tmp_path / "out") == {k: v for k, v in tree_digest(serial_golden).items()
                                            if not k.startswith("manifest")}
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["ray"]["model_loads"] == 3  # two workers, one restarted
    assert len({r["worker"] for r in report["ray"]["recordings"]}) >= 2


@needs_ray
def test_a_bad_recording_among_good_ones_fails_as_in_the_serial_run_and_keeps_the_others(
        recordings, serial_golden, known_answer_model, shared_ray, tmp_path, capsys):
    bad = small_recording(tmp_path / "bad", seed=9, frames=4, bad_frame=2)
    golden_before = tree_digest(serial_golden)
    bags = [recordings[0], bad, *recordings[1:]]
    runs = {}
    for name, extra in (("serial", []), ("ray", ["--ray", "--ray-workers", 2])):
        code, stdout, err = run_regress(capsys, *bags, "--golden", serial_golden, "--model", known_answer_model,
                                        "--out", tmp_path / name, "--update-golden", *extra)
        assert code == 2, stdout + err
        runs[name] = err
    line = f"error: bag {bad}, topic /cam/image, frame 2 (stamp 3.000000009): cannot decode the image:"
    assert line in runs["serial"] and line in runs["ray"]
    assert [x for x in runs["ray"].splitlines() if x.startswith("error:")] == \
        [x for x in runs["serial"].splitlines() if x.startswith("error:")]
    assert f"the golden run {serial_golden} was not changed" in runs["ray"]
    assert tree_digest(serial_golden) == golden_before
    assert "note: the 4 other recording(s) finished" in runs["ray"]
    kept = outputs_of(tmp_path / "ray")
    assert not (tmp_path / "ray" / "run" / "manifest.json").exists()  # an incomplete run
    golden = tree_digest(serial_golden)
    for key in ("rec0", "rec1", "rec2", "rec3"):  # the good recordings' outputs, as the serial run wrote them
        mine = {k: v for k, v in kept.items() if f"/{key}" in "/" + k}
        assert mine and mine == {k: v for k, v in golden.items() if f"/{key}" in "/" + k}
    assert not any("bad" in k for k in kept)
    report = json.loads((tmp_path / "ray" / "report.json").read_text())
    assert report["status"] == "error" and report["exit_code"] == 2
    assert [r["status"] for r in report["ray"]["recordings"]] == ["ok", "error", "ok", "ok", "ok"]


def test_without_ray_the_option_says_how_to_install_it(recordings, known_answer_model, tmp_path, capsys,
                                                       monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed: `import ray` raises ImportError
    code, _, err = run_regress(capsys, *recordings, "--golden", tmp_path / "g", "--model", known_answer_model,
                               "--out", tmp_path / "out", "--update-golden", "--ray")
    assert code == 2
    assert "--ray needs Ray, which is not installed" in err and "pip install 'seg_perception[fleet]'" in err
    assert not (tmp_path / "g").exists()


def repeated_recording(path: Path, frames: int) -> Path:
    """A long recording made quickly: one image, restamped (building each message anew is slow)."""
    from dataclasses import replace

    from seg_perception.bags import typestore

    rgb = np.zeros((120, 160, 3), np.uint8)
    rgb[30:70, 40:90] = 250
    msg = image_msg(rgb, 1)
    time_type = typestore().types["builtin_interfaces/msg/Time"]
    stamps = [1_000_000_000 + 66_000_000 * i for i in range(frames)]
    return write_bag(path, [("/cam/image", "sensor_msgs/msg/Image", t, replace(msg, header=replace(
        msg.header, stamp=time_type(sec=t // 1_000_000_000, nanosec=t % 1_000_000_000)))) for t in stamps])


def session_processes(sid: int) -> list[str]:
    """Command lines of the live processes of session ``sid`` (a command and all it started)."""
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            if int(stat[stat.rindex(")") + 2:].split()[3]) == sid and stat[stat.rindex(")") + 2] != "Z":
                out.append(Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except (OSError, ValueError, IndexError):
            continue
    return out


@needs_ray
def test_ctrl_c_stops_the_ray_work_and_leaves_the_golden_run_alone(known_answer_model, serial_golden, tmp_path):
    import signal
    import subprocess
    import time

    long = [repeated_recording(tmp_path / f"long{i}", frames=300) for i in range(3)]  # ~10 s each here
    before = tree_digest(serial_golden)
    proc = subprocess.Popen([sys.executable, "-m", "seg_perception.tools.cli", "regress", *map(str, long),
                             "--golden", str(serial_golden), "--model", str(known_answer_model), "--update-golden",
                             "--out", str(tmp_path / "out"), "--no-progress", "--ray", "--ray-workers", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not any("RecordingWorker.run" in c for c in session_processes(proc.pid)):  # a recording is running
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 2, err
    assert "interrupted; the golden run is unchanged" in err
    assert tree_digest(serial_golden) == before
    deadline = time.monotonic() + 30
    while session_processes(proc.pid) and time.monotonic() < deadline:  # Ray's processes end with the run
        time.sleep(0.5)
    assert session_processes(proc.pid) == []


def test_the_serial_run_gives_each_recording_a_tracker_of_its_own(recordings, known_answer_model, tmp_path, capsys):
    import shutil

    again = tmp_path / "again"  # the same recording under another name, replayed after the first
    shutil.copytree(recordings[2], again)
    code, stdout, err = run_regress(capsys, recordings[2], again, "--golden", tmp_path / "g", "--model",
                                    known_answer_model, "--out", tmp_path / "out", "--update-golden")
    assert code == 0, stdout + err
    frames = tmp_path / "g" / "frames"
    first = (frames / "rec2.jsonl").read_text()
    assert '"id":1,' in first  # tracking is on: instances carry track ids
    assert (frames / "again.jsonl").read_text() == first  # ids start again: nothing carried over
