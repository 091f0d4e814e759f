#!/usr/bin/env bash
# One short check on a machine with an NVIDIA GPU and PyTorch with CUDA (no TensorRT needed):
# the torch CUDA backend end to end (pre-processing, network, post-processing, as the node
# runs a frame) for the shipped model and YOLACT-R50 at 550 (random weights: speed only),
# in FP32, FP16 and FP16 with CUDA graphs; then post-processing alone at 20 and 100 instances.
# Prints frames/s and latency p50/p95 per configuration. About 2-4 minutes.
#
#   dev/gpu_check.sh                 # from the repository root; ITER=200 dev/gpu_check.sh for more rounds
# Needs: python3 with torch (CUDA), numpy, opencv, and this repository (nothing is installed).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"${PYTHON:-python3}" - "${ITER:-100}" <<'PY'
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

iters = int(sys.argv[1])
if not torch.cuda.is_available():
    sys.exit("gpu_check: torch sees no CUDA device; nothing measured")
print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")

from seg_perception.benchmark.postprocessing import synthetic_raw_outputs
from seg_perception.core.metadata import COCO_CLASSES
from seg_perception.core.postprocess import PostprocessParams, postprocess_yolact
from seg_perception.models import build_model
from seg_perception.models.checkpoint import save_checkpoint
from seg_perception.models.export import metadata_for_model
from seg_perception.pipeline import SegmentationPipeline
from seg_perception.runtime.base import BackendError
from seg_perception.runtime.torch_backend import TorchBackend
from seg_perception.synth import write_coco_dataset


def pct(values, q):
    return 1000 * float(np.percentile(values, q))


tmp = Path(tempfile.mkdtemp(prefix="gpu_check_"))
write_coco_dataset(tmp / "scene", 1, 1000, 640, 480)  # one synthetic 640x480 scene of the shipped classes
import cv2

rgb = cv2.cvtColor(cv2.imread(str(next((tmp / "scene" / "images").iterdir()))), cv2.COLOR_BGR2RGB)
torch.manual_seed(0)
r50 = build_model("yolact_resnet50", num_classes=80, input_size=550).eval()
r50_path = save_checkpoint(r50, tmp / "yolact_resnet50_550.pth")
metadata_for_model(r50, "yolact_resnet50_random", list(COCO_CLASSES), []).save(r50_path.with_suffix(".json"))
models = {"shipped (yolact_slim 384x288)": Path("models/seg_perception_default.pth"),
          "YOLACT-R50 550 (random weights)": r50_path}

print(f"\nend to end, {iters} frames of 640x480 after 10 warm-up frames (score threshold 0.3)")
print(f"{'model':34s} {'mode':12s} {'frames/s':>9s} {'p50 ms':>8s} {'p95 ms':>8s} {'instances':>9s}")
for label, path in models.items():
    for mode, half, graphs in (("fp32", False, False), ("fp16", True, False), ("fp16+graphs", True, True)):
        try:
            backend = TorchBackend(path, device="cuda", half=half, cuda_graphs=graphs)
        except BackendError as exc:
            print(f"{label:34s} {mode:12s} not available: {exc}")
            continue
        pipeline = SegmentationPipeline(backend, PostprocessParams(score_threshold=0.3))
        for _ in range(10):
            pipeline(rgb)
        times, found = [], 0
        for _ in range(iters):
            t0 = time.perf_counter()
            found = len(pipeline(rgb))
            times.append(time.perf_counter() - t0)
        print(f"{label:34s} {mode:12s} {1 / np.mean(times):9.1f} {pct(times, 50):8.2f} {pct(times, 95):8.2f} {found:9d}")
        backend.close()

print("\npost-processing alone (NumPy, CPU), YOLACT raw outputs at 550 (19248 priors), 640x480 source")
params = PostprocessParams(score_threshold=0.5, max_detections=100)
for n in (20, 100):
    raw = synthetic_raw_outputs(n)
    times = []
    for i in range(30):
        t0 = time.perf_counter()
        dets = postprocess_yolact(raw["boxes"], raw["scores"], raw["mask_coeffs"], raw["protos"], 640, 480, params)
        if i >= 5:
            times.append(time.perf_counter() - t0)
    assert len(dets) == n
    print(f"  {n:3d} instances: p50 {pct(times, 50):7.2f} ms  p95 {pct(times, 95):7.2f} ms")
PY
