"""`seg-perception bench --smoke`: the harness produces a well-formed report (speed is not tested)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import HSR_MCAP, REPO

pytestmark = [pytest.mark.ros, pytest.mark.slow]  # whole bench runs: a minute each


def test_smoke_run_writes_a_complete_report_and_chart(tmp_path, hsr_bag, ros_domain):
    pytest.importorskip("torchvision")
    out = tmp_path / "bench"
    proc = subprocess.run(
        [sys.executable, "-m", "seg_perception.tools.cli", "bench", "--smoke", "--bag", str(HSR_MCAP),
         "--out", str(out), "--cache", str(tmp_path / "cache")],
        cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, "ROS_DOMAIN_ID": ros_domain})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["smoke"] is True and report["threads"] == 2
    (backend,) = [r for r in report["backends"] if r["backend"] == "onnxruntime"]
    assert backend["n"] == 3 and 0 < backend["p50_ms"] <= backend["p95_ms"]
    (node,) = report["node"]
    assert node["processed"] > 0 and node["latency"]["p50_ms"] > 0 and node["node_peak_rss_mb"] > 0
    assert node["bytes_per_instances_msg"] > 0
    assert node["stages_ms"]["network_p50_ms"] > 0 and "publish_p95_ms" in node["stages_ms"]
    assert "grasp_p50_ms" in node["stages_ms"] and node["keypoints_latency"]["n"] > 0
    # the network alone, between the node's slices of the same run, is the latency reference
    assert node["rounds"] >= 1 and 0 < node["backend_alone"]["p50_ms"] <= node["backend_alone"]["p95_ms"]
    assert any("network-alone p95" in t["target"] for t in report["targets"])
    assert {r["contender"].split(" ")[0] for r in report["peers"]} >= {"maskrcnn_resnet50_fpn", "keypointrcnn_resnet50_fpn"}
    assert [r["instances"] for r in report["post"]] == [1, 20]
    assert all({"target", "value", "ok"} <= set(t) for t in report["targets"])
    assert (out / "latency.png").stat().st_size > 1000


def test_smoke_multicam_run_compares_one_node_with_separate_nodes(tmp_path, hsr_bag, ros_domain):
    out = tmp_path / "bench"
    proc = subprocess.run(
        [sys.executable, "-m", "seg_perception.tools.cli", "bench", "--smoke", "--parts", "multicam",
         "--camera-counts", "1,2", "--bag", str(HSR_MCAP), "--out", str(out), "--cache", str(tmp_path / "cache")],
        cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, "ROS_DOMAIN_ID": ros_domain})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    multicam = json.loads((out / "report.json").read_text())["multicam"]
    runs = {(r["layout"], r["cameras"]): r for r in multicam["runs"]}
    assert set(runs) == {("one node", 1), ("separate nodes", 1), ("one node", 2), ("separate nodes", 2)}
    for (layout, count), r in runs.items():
        assert len(r["per_camera"]) == count and r["rss_total_mb"] > 0
        assert r["total_output_hz"] == pytest.approx(sum(c["rate_hz"] for c in r["per_camera"].values()), abs=0.05)
    # Two nodes hold two models; one node for two cameras holds one.
    assert runs[("one node", 2)]["rss_total_mb"] < runs[("separate nodes", 2)]["rss_total_mb"]
    assert len(multicam["load_average_before"]) == 3
    assert {t["target"] for t in multicam["targets"]} >= {"2 cameras in one node: slowest camera >= 0.8x the fastest"}
