"""Several cameras: one node with ``cameras`` (one model, batched) against as many
single-camera nodes (one model each), in one run, over real DDS.

One camera process publishes every camera's 640x480 frames at the same rate (phases
spread evenly), the nodes run as in production, and this process subscribes to every
camera's ``instances`` like a downstream consumer. Reported per layout: total output
frames/s, per-camera output rate and latency (receipt minus image stamp, one clock),
total RSS and CPU of the node processes, and the fairness ratio (slowest camera's rate
over the fastest's).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from seg_perception.benchmark.node_e2e import _cpu_seconds, wait_for_camera
from seg_perception.benchmark.timing import stats
from seg_perception.core.stamps import stamp_ns


def _rss_bytes(pid: int) -> tuple[int, int]:
    """(current, peak) resident memory of a process."""
    now = peak = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                now = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) * 1024
    return now, peak


class _Consumer:
    """One rclpy node subscribed to every camera's ``instances``: (arrival ns, stamp ns) per camera."""

    def __init__(self, topics: dict[str, str]) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor

        from seg_perception.msg import InstanceArray

        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("multicam_bench_consumer", context=self.context)
        self.lock = threading.Lock()
        self.got: dict[str, list[tuple[int, int]]] = {camera: [] for camera in topics}
        for camera, topic in topics.items():
            self.node.create_subscription(InstanceArray, topic, self._record(camera), 10)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _record(self, camera: str):
        def record(msg: Any) -> None:
            now = time.time_ns()
            with self.lock:
                self.got[camera].append((now, stamp_ns(msg.header.stamp)))
        return record

    def take(self) -> dict[str, list[tuple[int, int]]]:
        with self.lock:
            got = {camera: list(v) for camera, v in self.got.items()}
            for v in self.got.values():
                v.clear()
        return got

    def close(self) -> None:
        import rclpy

        self.executor.shutdown(timeout_sec=10.0)
        self.thread.join(timeout=10.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def _nodes_for(layout: str, cameras: list[str], model_path: Path, threads: int, workdir: Path) -> tuple[list, dict]:
    """The node processes of a layout and {camera: instances topic}."""
    from seg_perception.ros.launch_args import node_launch_spec
    from seg_perception.ros.replay import NodeProcess

    repo = Path(__file__).resolve().parents[2]
    base = {"model_path": str(model_path), "params_file": str(repo / "config" / "seg_perception.yaml")}
    if layout == "one node":
        spec = node_launch_spec({**base, "namespace": "mcb", "cameras": ",".join(cameras)}, repo)
        spec.overrides["threads"] = threads
        return [NodeProcess(spec, workdir / "multicam_one.log")], {c: f"/mcb/{c}/instances" for c in cameras}
    procs = []
    for camera in cameras:
        spec = node_launch_spec({**base, "namespace": f"mcb/{camera}", "image": f"/mcb/{camera}/image"}, repo)
        spec.overrides["threads"] = threads
        procs.append(NodeProcess(spec, workdir / f"multicam_{camera}.log"))
    return procs, {c: f"/mcb/{c}/instances" for c in cameras}


def bench_layout(layout: str, count: int, model_path: Path, bag: Path, rate_hz: float, duration_s: float,
                 threads: int, workdir: Path, warmup_s: float = 4.0) -> dict[str, Any]:
    """One layout ("one node" or "separate nodes") with ``count`` cameras at ``rate_hz`` each."""
    cameras = [f"cam{i}" for i in range(count)]
    procs, topics = _nodes_for(layout, cameras, model_path, threads, workdir)
    consumer = _Consumer(topics)
    camera = None
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # every node active: its image subscription exists
            if all(consumer.node.count_subscribers(f"/mcb/{c}/image") > 0 for c in cameras):
                break
            for proc in procs:
                if not proc.alive():
                    raise RuntimeError(f"a node exited:\n{proc.log_tail()}")
            time.sleep(0.2)
        else:
            raise TimeoutError("nodes did not become active:\n" + "\n".join(p.log_tail(1000) for p in procs))
        cmd = [sys.executable, "-m", "seg_perception.benchmark.node_e2e", "--bag", str(bag), "--rate", str(rate_hz),
               "--duration", str(duration_s + warmup_s + 2)]
        for c in cameras:
            cmd += ["--topic", f"/mcb/{c}/image"]
        camera = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=os.environ.copy())
        wait_for_camera(camera)
        time.sleep(warmup_s)
        consumer.take()
        cpu0, t0 = sum(_cpu_seconds(p.proc.pid) for p in procs), time.monotonic()
        time.sleep(duration_s)
        got = consumer.take()
        cpu1, t1 = sum(_cpu_seconds(p.proc.pid) for p in procs), time.monotonic()
        rss = [_rss_bytes(p.proc.pid) for p in procs]
    finally:
        if camera is not None and camera.poll() is None:
            camera.kill()
        consumer.close()
        for proc in procs:
            proc.stop()
    seconds = t1 - t0
    per_camera = {}
    for c in cameras:
        lat = [(arrival - stamp) / 1e9 for arrival, stamp in got[c]]
        s = stats(lat)
        per_camera[c] = {"rate_hz": round(len(lat) / seconds, 2), "p50_ms": s.get("p50_ms"), "p95_ms": s.get("p95_ms")}
    rates = [v["rate_hz"] for v in per_camera.values()]
    return {
        "layout": layout, "cameras": count, "camera_rate_hz": rate_hz, "threads": threads,
        "duration_s": round(seconds, 2),
        "total_output_hz": round(sum(rates), 2),
        "fairness_min_over_max": round(min(rates) / max(rates), 3) if max(rates) > 0 else 0.0,
        "per_camera": per_camera,
        "rss_total_mb": round(sum(r[0] for r in rss) / 2**20, 1),
        "peak_rss_total_mb": round(sum(r[1] for r in rss) / 2**20, 1),
        "cpu_percent": round(100.0 * (cpu1 - cpu0) / seconds, 1),
    }


def bench_multicam(model_path: Path, bag: Path, counts: tuple[int, ...], rate_hz: float, duration_s: float,
                   threads: int, workdir: Path) -> list[dict[str, Any]]:
    """Every camera count in both layouts, alternating, so load changes hit both alike."""
    runs = []
    for count in counts:
        for layout in ("one node", "separate nodes"):
            runs.append(bench_layout(layout, count, model_path, bag, rate_hz, duration_s, threads, workdir))
    return runs


def check_multicam_targets(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 17's targets: at the largest count, one node's throughput >= separate nodes',
    its RSS <= half of theirs; every layout's slowest camera >= 0.8x the fastest."""
    checks = []
    by = {(r["layout"], r["cameras"]): r for r in runs}
    if not runs:
        return checks
    n = max(r["cameras"] for r in runs)
    one, sep = by.get(("one node", n)), by.get(("separate nodes", n))
    if one and sep:
        checks.append({"target": f"{n} cameras: one node's total throughput >= {n} separate nodes'",
                       "value": f"{one['total_output_hz']} vs {sep['total_output_hz']}",
                       "ok": one["total_output_hz"] >= sep["total_output_hz"]})
        checks.append({"target": f"{n} cameras: one node's RSS <= half of {n} separate nodes'",
                       "value": f"{one['rss_total_mb']} vs {sep['rss_total_mb']} MB",
                       "ok": one["rss_total_mb"] <= 0.5 * sep["rss_total_mb"]})
    for r in runs:
        if r["layout"] == "one node" and r["cameras"] > 1:
            checks.append({"target": f"{r['cameras']} cameras in one node: slowest camera >= 0.8x the fastest",
                           "value": r["fairness_min_over_max"], "ok": r["fairness_min_over_max"] >= 0.8})
    return checks
