"""What a user would pick instead: torchvision's Mask R-CNN and Keypoint R-CNN.

Random weights, the same square input size and thread count as our models, on the
same frames; each contender includes its own pre-processing so the comparison is
image in, instances out. Ours run through the full pipeline on ONNX Runtime.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from seg_perception.benchmark.models import BenchModel
from seg_perception.benchmark.timing import interleaved, stats


def torchvision_peers(size: int) -> dict[str, Any]:
    import torch
    from torchvision.models.detection import keypointrcnn_resnet50_fpn, maskrcnn_resnet50_fpn

    torch.manual_seed(0)
    common = dict(weights=None, weights_backbone=None, min_size=size, max_size=size)
    return {
        "maskrcnn_resnet50_fpn": maskrcnn_resnet50_fpn(num_classes=91, **common).eval(),
        "keypointrcnn_resnet50_fpn": keypointrcnn_resnet50_fpn(num_classes=2, num_keypoints=17, **common).eval(),
    }


def bench_peers(ours: list[BenchModel], frames: list[np.ndarray], size: int, threads: int, iterations: int,
                warmup: int = 1, progress: bool = True) -> list[dict[str, Any]]:
    import torch

    from seg_perception.pipeline import SegmentationPipeline
    from seg_perception.runtime.factory import create_backend

    torch.set_num_threads(threads)
    contenders: dict[str, Callable[[], object]] = {}
    pipelines = []
    counter = iter(range(10**9))
    frame = lambda: frames[next(counter) % len(frames)]  # noqa: E731 - same frame order for all
    for model in ours:
        pipe = SegmentationPipeline(create_backend("onnxruntime", model.onnx, threads=threads))
        pipelines.append(pipe)
        contenders[f"{model.name} (ours, onnxruntime)"] = (lambda p=pipe: p(frame()))
    for name, net in torchvision_peers(size).items():
        def run(n=net) -> object:
            img = torch.from_numpy(np.ascontiguousarray(frame())).permute(2, 0, 1).float() / 255.0
            with torch.inference_mode():
                return n([img])
        contenders[f"{name} (torchvision, torch)"] = run
    times = interleaved(contenders, iterations, warmup, progress, desc="peers")
    for pipe in pipelines:
        pipe.close()
    return [{"contender": name, "input": f"{size}x{size} (network)", "threads": threads, **stats(s), "_seconds": s}
            for name, s in times.items()]
