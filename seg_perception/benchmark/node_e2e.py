"""The node end to end over real DDS, three processes as on a robot.

A camera process replays 640x480 frames at a fixed rate (stamped at publish
time), the node runs as in production, and this process subscribes to
``instances`` like a downstream consumer. Latency is receipt time minus image
stamp (one clock: all processes run on this machine).

The network alone is the reference the node's latency is judged by, and on a shared
machine its speed moves by more than the node adds within minutes. So the run
alternates: a slice of the node with the camera publishing, then, with the camera
paused (SIGSTOP) and the node idle, the same model on the same backend and threads in
this process, paced at the camera's rate as the node runs it, on the same frames.
Both see the same machine, and ``backend_alone`` is the reference for the ratio.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from seg_perception.core.stamps import stamp_ns
from seg_perception.benchmark.timing import stats


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _peak_rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def camera_main(argv: list[str] | None = None) -> int:
    """The camera process: publish a bag's colour frames, looped, at ``--rate`` Hz on each
    ``--topic`` (several: several cameras at the same rate, their phases spread evenly)."""
    p = argparse.ArgumentParser()
    p.add_argument("--bag", required=True)
    p.add_argument("--topic", required=True, action="append")
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--duration", type=float, required=True)
    args = p.parse_args(argv)
    import rclpy
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import Image

    from seg_perception.bags import read_images

    frames = [deserialize_message(f.raw, Image) for f in read_images(args.bag)
              if f.msgtype == "sensor_msgs/msg/Image"]
    rclpy.init()
    node = rclpy.create_node("bench_camera")
    pubs = [node.create_publisher(Image, topic, 5) for topic in args.topic]
    deadline = time.monotonic() + 30
    while any(pub.get_subscription_count() == 0 for pub in pubs) and time.monotonic() < deadline:
        time.sleep(0.05)
    print("publishing", flush=True)  # the bench's measured window starts after this
    start = next_t = time.monotonic()
    i = 0
    step = 1.0 / args.rate / len(pubs)
    reported = start
    while time.monotonic() - start < args.duration:
        frame = frames[(i // len(pubs)) % len(frames)]
        frame.header.stamp = node.get_clock().now().to_msg()
        pubs[i % len(pubs)].publish(frame)
        i += 1
        next_t += step
        now = time.monotonic()
        if now - next_t > step:  # resumed after a pause (SIGSTOP): go on at the rate, no burst
            next_t = now
        if now - reported >= 1.0:  # the count so far, for a bench that kills the camera when done
            print(f"published {i}", flush=True)
            reported = now
        time.sleep(max(0.0, next_t - now))
    print(f"published {i}", flush=True)
    node.destroy_node()
    rclpy.shutdown()
    return 0


def wait_for_camera(camera: subprocess.Popen, timeout: float = 120.0) -> None:
    """Until the camera process starts publishing (it reads the bag and waits for the
    subscribers first, which on a loaded machine takes longer than any warm-up)."""
    deadline = time.monotonic() + timeout
    assert camera.stdout is not None
    while time.monotonic() < deadline:
        line = camera.stdout.readline()
        if not line:
            raise RuntimeError(f"the camera process exited with {camera.wait()} before publishing")
        if line.strip() == "publishing":
            return
    raise TimeoutError("the camera process did not start publishing")


def _rgb_frames(bag: Path) -> list[np.ndarray]:
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import Image

    from seg_perception.bags import read_images
    from seg_perception.ros.conversions import image_to_rgb

    return [image_to_rgb(deserialize_message(f.raw, Image), 10**8) for f in read_images(bag)
            if f.msgtype == "sensor_msgs/msg/Image"]


def backend_alone_paced(backend: Any, batches: list[np.ndarray], rate_hz: float, frames: int) -> list[float]:
    """Seconds of each of ``frames`` network runs, started ``1 / rate_hz`` apart as the
    node's frames are (the CPU idles between them, as it does in the node)."""
    times = []
    next_t = time.monotonic()
    for i in range(frames):
        t0 = time.perf_counter()
        backend.infer(batches[i % len(batches)])
        times.append(time.perf_counter() - t0)
        next_t += 1.0 / rate_hz
        time.sleep(max(0.0, next_t - time.monotonic()))
    return times


def bench_node(model_path: Path, bag: Path, rate_hz: float, duration_s: float, threads: int, workdir: Path,
               warmup_s: float = 3.0, slice_s: float = 2.5) -> dict[str, Any]:
    """Run the three processes, slices of the node (about ``slice_s`` each) alternating
    with the network alone (module docstring); return throughput, latency, the network
    alone, drops, CPU, RSS and message sizes. Short slices: this machine's speed drifts
    over seconds, and both must see the same drift."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.serialization import serialize_message

    from seg_perception.core.metadata import ModelMetadata
    from seg_perception.core.preprocess import resize_for_network
    from seg_perception.resources import default_params_file, package_root
    from seg_perception.ros.launch_args import node_launch_spec
    from seg_perception.ros.replay import CameraAndConsumer, NodeProcess
    from seg_perception.runtime.factory import create_backend

    topic = "/bench/camera/image"
    spec = node_launch_spec({"model_path": str(model_path), "image": topic, "namespace": "bench",
                             "params_file": str(default_params_file())}, package_root())
    spec.overrides["threads"] = threads
    md = ModelMetadata.load(model_path.with_suffix(".json"))
    batches = [resize_for_network(rgb, md.input_width, md.input_height) for rgb in _rgb_frames(bag)]
    alone_backend = create_backend("onnxruntime", model_path, threads=threads)
    backend_alone_paced(alone_backend, batches, 1000.0, 2)  # warm-up
    node = NodeProcess(spec, workdir / "bench_node.log")
    consumer = CameraAndConsumer(namespace="bench", image_topic="/bench/unused", node_name="bench_consumer")
    node_diagnostics: dict[str, str] = {}

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith("/bench/"):
                node_diagnostics.update({kv.key: kv.value for kv in status.values})

    consumer.node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    camera = None
    rounds = max(1, round(duration_s / slice_s))
    slice_s = duration_s / rounds
    alone: list[float] = []
    cpu = 0.0
    try:
        info = consumer.wait_for_node(node, timeout=120)
        camera_s = warmup_s + rounds * (slice_s * 2 + 2.0) + 30.0  # killed once measured
        camera = subprocess.Popen([sys.executable, "-m", "seg_perception.benchmark.node_e2e", "--bag", str(bag),
                                   "--topic", topic, "--rate", str(rate_hz), "--duration", str(camera_s)],
                                  stdout=subprocess.PIPE, text=True, env=os.environ.copy())
        wait_for_camera(camera)
        time.sleep(warmup_s)
        with consumer._cond:
            consumer.received.clear("instances")
            consumer.received.clear("keypoints")
        received: list[float] = []  # the node's frames_received at the end of each pause (camera still)
        slices: list[float] = []
        for _ in range(rounds):
            cpu0, t0 = _cpu_seconds(node.proc.pid), time.monotonic()
            time.sleep(slice_s)
            camera.send_signal(signal.SIGSTOP)
            slices.append(time.monotonic() - t0)
            time.sleep(0.3)  # the frame in flight is published; the node idles
            cpu += _cpu_seconds(node.proc.pid) - cpu0
            alone += backend_alone_paced(alone_backend, batches, rate_hz, max(5, round(rate_hz * slice_s)))
            # Taken after the pause (longer than the diagnostics period): the node's
            # counters and its stages (last 10 s) describe the slice before it.
            received.append(float(node_diagnostics.get("frames_received", "nan")))
            node_view = {key: float(node_diagnostics.get(key, "nan")) for key in ("latency_p50_ms", "latency_p95_ms")}
            stages = {key[len("stage_"):]: float(value) for key, value in node_diagnostics.items()
                      if key.startswith("stage_")}
            camera.send_signal(signal.SIGCONT)
        node_seconds = sum(slices)
        # Frames the node received per second of its slices (the first one is the counters' baseline).
        node_view["input_rate_hz"] = ((received[-1] - received[0]) / sum(slices[1:])) if rounds > 1 else float("nan")
        with consumer._cond:
            msgs = list(consumer.received.instances)
            arrivals = list(consumer.received.arrival_ns.get("instances", []))
            kp_latencies = [t - stamp_ns(m.header.stamp) for m, t in
                            zip(consumer.received.keypoints, consumer.received.arrival_ns.get("keypoints", []))]
        camera.kill()  # a graceful rclpy shutdown can hang; what it published it has said each second
        camera.wait(timeout=60)
        published = int(camera.stdout.read().split()[-1])  # the last "published N"
        peak_rss = _peak_rss_bytes(node.proc.pid)
    finally:
        if camera is not None and camera.poll() is None:
            camera.send_signal(signal.SIGCONT)
            camera.kill()
        consumer.close()
        node.stop()
        alone_backend.close()
    latencies = [t - stamp_ns(m.header.stamp) for m, t in zip(msgs, arrivals)]
    sizes = [len(serialize_message(m)) for m in msgs]
    full_frame = [sum(m.image_width * m.image_height for _ in m.instances) + 64 for m in msgs]
    with_instances = [(s, f) for s, f, m in zip(sizes, full_frame, msgs) if m.instances]
    return {
        "model": info.model_name, "backend": info.backend, "threads": threads,
        "camera_rate_hz": rate_hz, "duration_s": round(node_seconds, 2), "rounds": rounds,
        "published_total": published,
        "node_input_rate_hz": round(node_view["input_rate_hz"], 2),
        "node_internal_latency_p50_ms": round(node_view["latency_p50_ms"], 2),
        "node_internal_latency_p95_ms": round(node_view["latency_p95_ms"], 2),
        # Where a frame's time goes inside the node (its /diagnostics, last 10 s): receipt
        # (publisher's send to our callback), queue, decode, preprocess, network,
        # postprocess, depth_wait, tracking_3d, build, publish; p50 and p95 in ms.
        "stages_ms": stages,
        "processed": len(msgs),
        "throughput_hz": round(len(msgs) / node_seconds, 3),
        "dropped_fraction": round(max(0.0, 1.0 - len(msgs) / max(1.0, rate_hz * node_seconds)), 3),  # >= 0: window edges
        "latency": stats([ns / 1e9 for ns in latencies]),
        "latency_series_ms": [round(ns / 1e6, 2) for ns in latencies],  # in arrival order
        # keypoints (model poses and grasp points) follow instances: the node publishes instances first.
        "keypoints_latency": stats([ns / 1e9 for ns in kp_latencies]),
        # The network alone between the node's slices, paced at the camera rate (module docstring).
        "backend_alone": stats(alone),
        "node_cpu_percent": round(100.0 * cpu / node_seconds, 1),
        "node_peak_rss_mb": round(peak_rss / 2**20, 1),
        "instances_per_message": round(float(np.mean([len(m.instances) for m in msgs])), 2) if msgs else 0,
        "bytes_per_instances_msg": round(float(np.mean(sizes)), 1) if sizes else 0,
        "bytes_full_frame_mono8": round(float(np.mean(full_frame)), 1) if full_frame else 0,
        "size_ratio_vs_full_frame_mono8": (round(float(np.mean([f / s for s, f in with_instances])), 1)
                                           if with_instances else None),
    }


if __name__ == "__main__":
    raise SystemExit(camera_main())
