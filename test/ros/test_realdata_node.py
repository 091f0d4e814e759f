"""The node started as on a robot with the mistakes real users make (issue 13, item 3):
a misspelt parameter is named with the right spelling; a model that does not load is an
ERROR line with the path and the fix, and the process exits non-zero."""

from __future__ import annotations

import signal
import time

import pytest

from conftest import REPO, ros_available

if ros_available() is None:
    from seg_perception.ros.launch_args import node_launch_spec
    from seg_perception.ros.replay import NodeProcess

pytestmark = pytest.mark.ros


def wait_for_log(node: "NodeProcess", text: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = node.log_tail(20000)
        if text in log:
            return log
        if not node.alive():
            break
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not in the node's log:\n{node.log_tail()}")


def start(tmp_path, params_yaml: str, model: str, ros_domain: str) -> "NodeProcess":
    params = tmp_path / "params.yaml"
    params.write_text(params_yaml)
    spec = node_launch_spec({"namespace": "realdata", "image": "/realdata/cam", "params_file": str(params),
                             "model_path": model}, REPO)
    return NodeProcess(spec, tmp_path / "node.log")


def test_misspelt_parameters_and_a_model_that_does_not_load_cannot_be_missed(tmp_path, ros_domain):
    missing = tmp_path / "no_such_model.onnx"
    node = start(tmp_path, "/**:\n  ros__parameters:\n    score_treshold: 0.6\n    trackin_enabled: true\n"
                           "    zzz_totally_unknown: 1\n", str(missing), ros_domain)
    try:
        log = wait_for_log(node, "will exit with status 1")
        assert "unknown parameter 'score_treshold' (did you mean 'score_threshold'?); its value is ignored" in log
        assert "unknown parameter 'trackin_enabled' (did you mean 'tracking_enabled'?)" in log
        assert "unknown parameter 'zzz_totally_unknown' (see config/seg_perception.yaml" in log
        error = next(line for line in log.splitlines() if "cannot load the model" in line)
        assert "[ERROR]" in error and str(missing) in error and "Fix: set model_path" in error
        assert node.alive()  # still up: /diagnostics reports the failure until it is stopped
    finally:
        node.stop(signal.SIGINT)
    assert node.proc.returncode == 1, node.log_tail()


def test_a_node_that_started_normally_exits_0(tmp_path, ros_domain, known_answer_model):
    node = start(tmp_path, "/**:\n  ros__parameters:\n    score_threshold: 0.6\n", str(known_answer_model), ros_domain)
    try:
        log = wait_for_log(node, "model '")
        assert "unknown parameter" not in log
    finally:
        node.stop(signal.SIGINT)
    assert node.proc.returncode == 0, node.log_tail()
