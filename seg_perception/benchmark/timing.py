"""Interleaved timing of several contenders and the statistics we report."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np


def interleaved(contenders: dict[str, Callable[[], object]], iterations: int, warmup: int = 2,
                progress: bool = False, desc: str = "bench") -> dict[str, list[float]]:
    """Seconds per call of each contender; round-robin so load changes hit all alike."""
    for _ in range(warmup):
        for fn in contenders.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    rounds = range(iterations)
    if progress:
        from tqdm import tqdm

        rounds = tqdm(rounds, desc=desc, unit="round", leave=False)
    for _ in rounds:
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def stats(seconds: list[float]) -> dict[str, float]:
    """Latency percentiles (ms) and throughput (1/mean, per second)."""
    a = np.asarray(seconds, dtype=np.float64)
    if a.size == 0:
        return {"n": 0}
    return {
        "n": int(a.size),
        "mean_ms": round(float(a.mean()) * 1e3, 3),
        "p50_ms": round(float(np.percentile(a, 50)) * 1e3, 3),
        "p95_ms": round(float(np.percentile(a, 95)) * 1e3, 3),
        "p99_ms": round(float(np.percentile(a, 99)) * 1e3, 3),
        "throughput_hz": round(float(1.0 / a.mean()), 3),
    }
