#!/usr/bin/env python3
"""Bench: `regress` serial vs `regress --ray` (2 local workers) over 8 synthetic recordings.

One run prints: machine load, wall time of each command and their ratio (also without
Ray's start-up), model loads, peak memory (PSS summed over the command's whole process
tree: driver, Ray's GCS/raylet and workers, sampled every 0.2 s), the per-recording
cost, and whether both runs wrote the same bytes. Needs Ray importable (PYTHONPATH).

    source dev/env.sh && PYTHONPATH=$PYTHONPATH:/tmp/site_ray python dev/bench_regress_ray.py /tmp/bench
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path


def session_pss_kib(sid: int) -> int:
    """PSS (KiB) summed over every process of session ``sid`` (the command and all it started)."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[3]) != sid:  # field 6 of /proc/PID/stat: session id
                continue
            for line in Path(entry.path, "smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return total


def timed(cmd: list[str], log: Path) -> tuple[float, int, int]:
    """(wall seconds, exit code, peak PSS MiB) of ``cmd`` run in a session of its own."""
    peak = 0
    t0 = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, session_pss_kib(proc.pid))
                done.wait(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = proc.wait()
        done.set()
        sampler.join()
    return time.monotonic() - t0, code, peak // 1024


def digest(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file() and p.name != "manifest.json"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("work", type=Path, help="work directory (recordings are kept there and reused)")
    p.add_argument("--recordings", type=int, default=8)
    p.add_argument("--frames", type=int, default=30, help="frames per recording (%(default)s)")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    tool = [sys.executable, "-m", "seg_perception.tools.cli"]
    args.work.mkdir(parents=True, exist_ok=True)
    bags = []
    for i in range(args.recordings):
        bag = args.work / f"synthetic_{i}"
        if not (bag / "metadata.yaml").is_file():
            subprocess.run([*tool, "generate-recording", str(bag), "-n", str(args.frames), "--seed", str(i),
                            "--quiet"], check=True)
        bags.append(str(bag))
    common = [*tool, "regress", *bags, "--golden", str(args.work / "golden"), "-p", "device=cpu", "--no-progress"]
    load_before = os.getloadavg()
    serial_s, serial_code, serial_mib = timed([*common, "--update-golden", "--out", str(args.work / "serial")],
                                              args.work / "serial.log")
    ray_s, ray_code, ray_mib = timed([*common, "--out", str(args.work / "ray"), "--ray", "--ray-workers",
                                      str(args.workers)], args.work / "ray.log")
    load_after = os.getloadavg()
    if serial_code != 0 or ray_code not in (0, 1):  # 1: the comparison found differences (printed below)
        print(f"a run failed: serial exit {serial_code}, ray exit {ray_code}; see {args.work}/*.log")
        return 1
    report = json.loads((args.work / "ray" / "report.json").read_text())
    serial_report = json.loads((args.work / "serial" / "report.json").read_text())
    frames = report["timing"]["frames"]
    timing = report["ray"]["timing"]
    per_rec = [r["seconds"] for r in report["ray"]["recordings"]]
    same = digest(args.work / "serial" / "run") == digest(args.work / "ray" / "run")
    work_ray = timing["tasks_s"]
    print(f"machine: {os.cpu_count()} CPUs; load average before {load_before[0]:.1f}, after {load_after[0]:.1f} "
          "(1 min; other users' processes included)")
    print(f"recordings: {args.recordings} x {args.frames} frames = {frames} frames (generate-recording 640x480)")
    print(f"serial:   {serial_s:6.1f} s wall  ({frames / serial_s:.2f} frames/s), 1 model load, "
          f"peak PSS {serial_mib} MiB; run {serial_report['timing']['seconds']:.1f} s")
    print(f"ray x{args.workers}:   {ray_s:6.1f} s wall  ({frames / ray_s:.2f} frames/s), "
          f"{report['ray']['model_loads']} model loads, peak PSS {ray_mib} MiB (driver + Ray + workers)")
    print(f"  of which: Ray start {timing['ray_start_s']:.1f} s, first model load {timing['first_model_s']:.1f} s, "
          f"recording tasks {work_ray:.1f} s")
    print(f"speed-up (wall): {serial_s / ray_s:.2f}x; recording work only (serial run time vs Ray tasks): "
          f"{serial_report['timing']['seconds'] / work_ray:.2f}x")
    print(f"per recording on a worker: mean {sum(per_rec) / len(per_rec):.1f} s, max {max(per_rec):.1f} s "
          f"({sum(per_rec) / frames:.3f} s per frame)")
    print(f"outputs byte-identical (frames + output bags of every recording): {same}; comparison with the "
          f"serial golden run: {report['status']} (exit {ray_code})")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
