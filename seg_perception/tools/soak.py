"""``seg-perception soak``: the node under a camera faster than the model, for a long time.

Starts the node in its own process, publishes a looping recording at a fixed rate
from this process, and samples what a robot integrator worries about: the age of
every processed frame (publish time, or receipt where rclpy does not report it,
minus image stamp), the node's RSS, frames
dropped (from /diagnostics) and problems reported. Writes a JSON report and a PNG
of latency and RSS over time. The overload test runs the same ``run_load`` for 60 s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from seg_perception.core.stamps import stamp_ns as header_stamp_ns


def process_rss_bytes(pid: int) -> int:
    """Resident set size of a process (Linux /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def process_threads_and_fds(pid: int) -> tuple[int, int]:
    return len(os.listdir(f"/proc/{pid}/task")), len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class LoadReport:
    duration_s: float
    publish_rate_hz: float
    published: int = 0
    processed: int = 0
    output_times: list[float] = field(default_factory=list)  # seconds since start
    ages_s: list[float] = field(default_factory=list)  # node publish time minus image stamp
    rss_samples: list[tuple[float, int]] = field(default_factory=list)  # (t, bytes)
    dropped_reported: int = 0
    problems_reported: int = 0

    @property
    def output_rate_hz(self) -> float:
        t = self.output_times
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0

    def inference_period_s(self) -> float:
        """Median interval between outputs while saturated: the node's processing period."""
        return float(np.median(np.diff(self.output_times))) if len(self.output_times) > 2 else float("nan")

    def age_over_period(self) -> np.ndarray:
        """Each output's age divided by the interval since the previous output.

        While the camera outpaces the model that interval is the time this frame's
        inference took, so a ratio at most 2 means no frame waited behind another.
        """
        t, ages = np.asarray(self.output_times), np.asarray(self.ages_s)
        return ages[1:] / np.maximum(np.diff(t), 1e-6) if t.size > 1 else np.zeros(0)

    def rss_growth(self, warmup_s: float) -> float:
        """Relative RSS growth from the first sample after warm-up to the last sample."""
        after = [r for t, r in self.rss_samples if t >= warmup_s]
        return (after[-1] - after[0]) / after[0] if len(after) > 1 else float("nan")

    def summary(self, warmup_s: float) -> dict[str, Any]:
        ages = np.array(self.ages_s) if self.ages_s else np.array([np.nan])
        return {
            "duration_s": self.duration_s, "publish_rate_hz": self.publish_rate_hz,
            "published": self.published, "processed": self.processed,
            "output_rate_hz": round(self.output_rate_hz, 2),
            "inference_period_ms": round(self.inference_period_s() * 1e3, 1),
            "age_p50_ms": round(float(np.percentile(ages, 50)) * 1e3, 1),
            "age_p95_ms": round(float(np.percentile(ages, 95)) * 1e3, 1),
            "age_max_ms": round(float(ages.max()) * 1e3, 1),
            "age_over_period_max": round(float(self.age_over_period().max(initial=0.0)), 3),
            "rss_start_mb": round(self.rss_samples[0][1] / 2**20, 1) if self.rss_samples else None,
            "rss_end_mb": round(self.rss_samples[-1][1] / 2**20, 1) if self.rss_samples else None,
            "rss_growth_after_warmup": round(self.rss_growth(warmup_s), 4),
            "dropped_reported": self.dropped_reported, "problems_reported": self.problems_reported,
        }


def run_load(node_process: Any, player: Any, frames: list, rate_hz: float, duration_s: float,
             progress: bool = False) -> LoadReport:
    """Publish ``frames`` (rclpy Images, looped, restamped with the current time) at ``rate_hz``."""
    from diagnostic_msgs.msg import DiagnosticArray

    report = LoadReport(duration_s=duration_s, publish_rate_hz=rate_hz)
    diagnostics: list = []
    sub = player.node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    clock = player.node.get_clock()
    start = time.monotonic()
    wall_start = time.time()
    stop = threading.Event()

    def sample_rss() -> None:
        while not stop.is_set():
            report.rss_samples.append((time.monotonic() - start, process_rss_bytes(node_process.proc.pid)))
            stop.wait(1.0)

    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=int(duration_s), unit="s", desc="soak")
    period = 1.0 / rate_hz
    next_t = start
    i = 0
    try:
        while (now := time.monotonic()) - start < duration_s:
            if not node_process.alive():
                raise RuntimeError(f"the node died during the run:\n{node_process.log_tail()}")
            frame = frames[i % len(frames)]
            frame.header.stamp = clock.now().to_msg()
            player.publish(frame)
            report.published += 1
            i += 1
            # Collect outputs received so far (ages from their stamps).
            with player._cond:  # take what arrived and forget it: hours of outputs must not pile up
                new = list(zip(player.received.instances, player.received.source_ns.get("instances", [])))
                player.received.clear("instances")
                player.received.clear("keypoints")
            for msg, sent_ns in new:  # the node's publish time where rclpy reports it, else receipt
                stamp_ns = header_stamp_ns(msg.header.stamp)
                report.ages_s.append((sent_ns - stamp_ns) / 1e9)
                report.output_times.append(sent_ns / 1e9 - wall_start)
            if bar is not None and int(now - start) > bar.n:
                bar.update(int(now - start) - bar.n)
            next_t += period
            time.sleep(max(0.0, next_t - time.monotonic()))
    finally:
        stop.set()
        sampler.join()
        if bar is not None:
            bar.close()
        player.node.destroy_subscription(sub)
    report.processed = len(report.output_times)
    for msg in diagnostics:
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            if "frames_dropped" in values:
                report.dropped_reported = max(report.dropped_reported, int(values["frames_dropped"]))
                report.problems_reported = max(report.problems_reported, int(values.get("problems_total", 0)))
    return report


def plot_report(report: LoadReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    ax1.plot(report.output_times, np.array(report.ages_s) * 1e3, ".", ms=2)
    ax1.set_ylabel("frame age when published (ms)")
    ax1.set_title(f"seg_perception soak: camera {report.publish_rate_hz:g} Hz, output {report.output_rate_hz:.1f} Hz")
    if report.rss_samples:
        t, r = zip(*report.rss_samples)
        ax2.plot(t, np.array(r) / 2**20)
    ax2.set_ylabel("node RSS (MiB)")
    ax2.set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seg-perception soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bag", required=True, help="recording whose colour frames are looped")
    p.add_argument("--topic", default=None, help="image topic (default: the only colour one)")
    p.add_argument("--duration", type=float, default=600.0, help="seconds to run (default 600)")
    p.add_argument("--rate", type=float, default=30.0, help="camera rate in Hz (default 30)")
    p.add_argument("--model", default="", help="model path (default: the shipped model)")
    p.add_argument("--params", default="", help="parameter YAML")
    p.add_argument("--warmup", type=float, default=10.0, help="seconds excluded from RSS growth")
    p.add_argument("--out", default="soak_output", help="directory for report.json and soak.png")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import Image

    from seg_perception.bags import BagError, read_images
    from seg_perception.ros.launch_args import node_launch_spec
    from seg_perception.ros.replay import CameraAndConsumer, NodeProcess

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        frames = [deserialize_message(f.raw, Image) for f in read_images(args.bag, args.topic)
                  if f.msgtype == "sensor_msgs/msg/Image"]
    except BagError as exc:
        print(f"error: {exc}")
        return 2
    from seg_perception.resources import default_params_file, package_root

    repo = package_root()
    spec = node_launch_spec({"params_file": args.params or str(default_params_file()),
                             "model_path": args.model, "image": "/soak/image"}, repo)
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(150, 220)))
    node = NodeProcess(spec, out / "node.log")
    player = CameraAndConsumer(image_topic="/soak/image")
    try:
        player.wait_for_node(node, timeout=120)
        report = run_load(node, player, frames, args.rate, args.duration, progress=True)
    finally:
        player.close()
        shutdown_s = node.stop()
    summary = {**report.summary(args.warmup), "shutdown_s": round(shutdown_s, 3)}
    (out / "report.json").write_text(json.dumps({"summary": summary, "series": asdict(report)}, indent=1))
    plot_report(report, out / "soak.png")
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        print(f"{key.ljust(width)}  {value}")
    print(f"\nreport: {out / 'report.json'}\nplot:   {out / 'soak.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
