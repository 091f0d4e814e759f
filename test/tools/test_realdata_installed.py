"""The tools run from the colcon install overlay, as on a robot (issue 13, item 7): no source
tree on PYTHONPATH, the working directory elsewhere; config, models and launch files come from
the package's share directory found through the ament index.

The overlay is REPO/build/install (built by `make test`'s setup, `dev/setup.sh`);
SEG_PERCEPTION_INSTALL names another one. Skipped when there is none."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import HSR_MCAP, REPO

INSTALL = Path(os.environ.get("SEG_PERCEPTION_INSTALL", REPO / "build" / "install"))
SHARE = INSTALL / "seg_perception" / "share" / "seg_perception"
TOOL = INSTALL / "seg_perception" / "lib" / "seg_perception" / "seg-perception"  # what `ros2 run` starts


def installed(cwd: Path, *command: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``command`` in bash after ``source INSTALL/setup.bash``, with nothing of the source tree on the path."""
    if not (INSTALL / "setup.bash").is_file() or not TOOL.is_file():
        pytest.skip(f"no colcon install overlay at {INSTALL} (make test builds one)")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "COLCON_PREFIX_PATH")}
    env["AMENT_PREFIX_PATH"] = sys.prefix  # the ROS wheels of the venv; the overlay adds itself
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    script = f"source {shlex.quote(str(INSTALL / 'setup.bash'))} && " + " ".join(shlex.quote(c) for c in command)
    return subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_installed_package_finds_its_files_in_the_share_directory(tmp_path):
    probe = ("import seg_perception, json; from seg_perception import resources; "
             "from seg_perception.pipeline import default_model_path; "
             "from seg_perception.tools.regress import default_params_path; "
             "print(json.dumps({'module': seg_perception.__file__, 'root': str(resources.package_root()), "
             "'params': str(default_params_path()), 'model': str(default_model_path()), "
             "'launch': str(resources.resource('launch/seg_perception.launch.py'))}))")
    result = installed(tmp_path, sys.executable, "-c", probe)
    assert result.returncode == 0, result.stderr
    where = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(where["module"]).resolve().is_relative_to(INSTALL.resolve()), where  # not the source tree
    assert Path(where["root"]) == SHARE
    assert Path(where["params"]) == SHARE / "config" / "seg_perception.yaml"
    assert Path(where["model"]) == SHARE / "models" / "seg_perception_default.onnx"
    assert Path(where["launch"]).is_file() and Path(where["launch"]).is_relative_to(SHARE)


def test_regress_from_the_overlay_uses_the_installed_params_and_model(tmp_path, hsr_bag):
    result = installed(tmp_path, sys.executable, str(TOOL), "regress", str(HSR_MCAP), "--golden", "golden",
                       "--update-golden", "--out", "out", "--no-progress")
    assert result.returncode == 0, result.stdout + result.stderr
    manifest = json.loads((tmp_path / "golden" / "manifest.json").read_text())
    assert Path(manifest["params_file"]) == SHARE / "config" / "seg_perception.yaml"
    assert Path(manifest["model"]["path"]) == SHARE / "models" / "seg_perception_default.onnx"


def test_bench_from_the_overlay_without_a_recording_asks_for_one(tmp_path):
    result = installed(tmp_path, sys.executable, str(TOOL), "bench", "--parts", "post", "--smoke")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "no --bag given" in result.stderr and "--bag PATH" in result.stderr


@pytest.mark.ros
def test_bench_node_run_from_the_overlay_starts_the_node_with_the_installed_params(tmp_path, hsr_bag, ros_domain):
    result = installed(tmp_path, sys.executable, str(TOOL), "bench", "--bag", str(HSR_MCAP), "--parts", "node",
                       "--smoke", "--models", "shipped", "--out", "bench")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Couldn't parse params file" not in result.stdout + result.stderr
    (run,) = json.loads((tmp_path / "bench" / "report.json").read_text())["node"]
    assert run.get("throughput_hz", 0) > 0, run
