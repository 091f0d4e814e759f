"""PyTorch backend: runs one of our checkpoints directly (CPU or CUDA).

Useful where no ONNX/TensorRT build exists yet, for debugging, and as the reference
the exported graphs are checked against. The graph it runs is the same module the
exporter traces (``models.transform.ImageInputModel``), so outputs agree with the
ONNX backends to float rounding.

CUDA extras (not exercised on CPU-only machines): ``half`` runs the network in FP16
(the uint8 -> float normalisation stays FP32, outputs are returned as FP32);
``channels_last`` converts the weights to NHWC memory order (the input already is:
the NHWC image permuted to NCHW is a channels-last view); ``cuda_graphs`` captures
one CUDA graph per batch size after a warm-up and replays it, removing per-layer
launch overhead (``torch.cuda.CUDAGraph``/``torch.cuda.graph``, static input/output
buffers, as documented in the PyTorch CUDA semantics notes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from seg_perception.core.metadata import ModelMetadata, metadata_path_for
from seg_perception.models.checkpoint import (
    CheckpointError,
    checkpoint_model_spec,
    load_state_dict_strict,
    read_checkpoint,
    state_dict_of,
)
from seg_perception.models.registry import MODEL_BUILDERS, build_model
from seg_perception.models.transform import ImageInputModel
from seg_perception.runtime.base import Backend, BackendError


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BackendError(f"device {device!r} requested but CUDA is not available to PyTorch")
    return dev


def metadata_from_checkpoint(checkpoint: Any, path: Path) -> ModelMetadata:
    """Model metadata of one of our training checkpoints (it names its architecture, builder arguments,
    classes and keypoint tables), so ``model_path:=last.pth`` needs no JSON beside it.

    A bare state dict (the official .pth files) names nothing: BackendError with the fix.
    """
    from seg_perception.models.export import metadata_for_model
    from seg_perception.models.transform import input_normalisation

    spec = checkpoint_model_spec(checkpoint)
    if spec is None or not isinstance(checkpoint.get("class_names"), list):
        raise BackendError(
            f"model metadata not found for {path}: expected {metadata_path_for(path)}. The file is a bare state dict "
            "that names neither its network nor its classes; export it once with `seg-perception export "
            f"{path} --arch ARCH --classes coco` and use the .onnx (or its .json beside this file)")
    architecture, kwargs = spec
    if architecture not in MODEL_BUILDERS:
        raise BackendError(f"{path}: unknown architecture {architecture!r}")
    try:
        model = build_model(architecture, **kwargs)
    except (TypeError, ValueError) as exc:
        raise BackendError(f"{path}: cannot build {architecture} with {kwargs}: {exc}") from None
    mean, std = input_normalisation(model)
    extra: dict[str, Any] = {"mean": mean, "std": std, "mask_crop": "box"}  # our trainer's mask loss
    if checkpoint.get("class_keypoints"):
        extra["class_keypoints"] = {str(c): [int(i) for i in ks] for c, ks in checkpoint["class_keypoints"].items()}
    return metadata_for_model(model, path.stem, [str(c) for c in checkpoint["class_names"]],
                              [str(k) for k in checkpoint.get("keypoint_names") or []],
                              [(int(a), int(b)) for a, b in checkpoint.get("skeleton") or []], **extra)


class TorchBackend(Backend):
    """Runs a ``.pth`` checkpoint (ours or an official YOLACT one) with PyTorch.

    Args:
        model_path:    the checkpoint; read with ``weights_only=True`` only.
        metadata:      model metadata; by default the sidecar JSON beside the checkpoint.
        device:        "auto" (CUDA if available), "cpu", "cuda" or "cuda:N".
        half:          FP16 inference (CUDA only).
        channels_last: NHWC weight layout (CUDA; faster convolutions on tensor cores).
        cuda_graphs:   capture and replay CUDA graphs (CUDA only).
        threads:       torch intra-op threads on CPU; 0 leaves torch's default.

    The network is rebuilt from the checkpoint's recorded architecture and builder
    arguments, or, for a bare state dict, from ``metadata.architecture`` with the
    class/keypoint/prototype counts and input size of the metadata.
    """

    name = "torch"

    def __init__(
        self,
        model_path: str | Path,
        metadata: ModelMetadata | None = None,
        device: str = "auto",
        half: bool = False,
        channels_last: bool = False,
        cuda_graphs: bool = False,
        threads: int = 0,
    ) -> None:
        self.model_path = Path(model_path)
        checkpoint: Any = None
        if metadata is None:
            sidecar = metadata_path_for(self.model_path)
            if sidecar.is_file():
                try:
                    metadata = ModelMetadata.load(sidecar)
                except (ValueError, OSError) as exc:
                    raise BackendError(f"bad model metadata {sidecar} for {self.model_path}: {exc}") from None
            else:  # our training checkpoints carry everything the sidecar would say
                try:
                    checkpoint = read_checkpoint(self.model_path)
                except CheckpointError as exc:
                    raise BackendError(str(exc)) from None
                metadata = metadata_from_checkpoint(checkpoint, self.model_path)
        super().__init__(metadata)
        self.device = _resolve_device(device)
        if (half or cuda_graphs) and self.device.type != "cuda":
            raise BackendError("half precision and CUDA graphs need a CUDA device")
        if threads > 0:
            torch.set_num_threads(threads)
        self.precision = "fp16" if half else "fp32"
        self.channels_last = channels_last
        self.cuda_graphs = cuda_graphs

        try:
            checkpoint = checkpoint if checkpoint is not None else read_checkpoint(self.model_path)
            model = self._build(checkpoint)
            load_state_dict_strict(model, state_dict_of(checkpoint, str(self.model_path)), str(self.model_path))
        except CheckpointError as exc:
            raise BackendError(str(exc)) from None
        self._check_model(model)
        model = model.eval().to(self.device)
        if half:
            model = model.half()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.module = ImageInputModel(model, metadata.mean, metadata.std).to(self.device).eval()
        self.output_names = list(self.module.output_names)
        self._graphs: dict[int, tuple[Any, torch.Tensor, tuple[torch.Tensor, ...]]] = {}

    def _build(self, checkpoint: Any) -> torch.nn.Module:
        md = self.metadata
        spec = checkpoint_model_spec(checkpoint)
        if spec is not None:
            architecture, kwargs = spec
        else:
            architecture = md.architecture
            kwargs = {
                "num_classes": md.num_classes,
                "num_keypoints": md.num_keypoints,
                "input_size": (md.input_height, md.input_width),
            }
            if md.output_format == "yolact":
                kwargs["num_prototypes"] = md.num_prototypes
            if architecture.startswith("yolact_plus"):
                # Re-scoring (and its 256 px floor) only where the export enabled it.
                kwargs["mask_rescoring"] = bool(md.maskiou_weights)
        if architecture not in MODEL_BUILDERS:
            raise BackendError(f"{self.model_path}: unknown architecture {architecture!r}")
        try:
            return build_model(architecture, **kwargs)
        except (TypeError, ValueError) as exc:
            raise BackendError(f"{self.model_path}: cannot build {architecture} with {kwargs}: {exc}") from None

    def _check_model(self, model: torch.nn.Module) -> None:
        md = self.metadata
        actual = (model.num_classes, model.num_keypoints, getattr(model, "num_prototypes", 0),  # type: ignore[attr-defined]
                  tuple(model.input_size))  # type: ignore[attr-defined]
        expected = (md.num_classes, md.num_keypoints, md.num_prototypes, (md.input_height, md.input_width))
        if actual != expected:
            raise BackendError(
                f"{self.model_path} does not match its metadata: model (classes, keypoints, prototypes, input HxW) = "
                f"{actual}, metadata = {expected}"
            )
        model_format = getattr(model, "output_format", "yolact")
        if model_format != md.output_format:
            raise BackendError(f"{self.model_path}: {md.architecture} produces {model_format!r} outputs, "
                               f"metadata says {md.output_format!r}")

    def _check_batch(self, batch: np.ndarray) -> None:
        md = self.metadata
        if not isinstance(batch, np.ndarray) or batch.dtype != np.uint8 or batch.ndim != 4 \
                or batch.shape[1:] != (md.input_height, md.input_width, 3):
            got = f"{batch.shape} {batch.dtype}" if isinstance(batch, np.ndarray) else type(batch).__name__
            raise ValueError(f"expected (B, {md.input_height}, {md.input_width}, 3) uint8 images, got {got}")

    def _graph_for(self, batch_size: int) -> tuple[Any, torch.Tensor, tuple[torch.Tensor, ...]]:
        entry = self._graphs.get(batch_size)
        if entry is None:
            md = self.metadata
            static_in = torch.zeros((batch_size, md.input_height, md.input_width, 3), dtype=torch.uint8, device=self.device)
            # Warm up on a side stream (cuDNN autotuning, allocator) before capture.
            side = torch.cuda.Stream(device=self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side), torch.no_grad():
                for _ in range(3):
                    self.module(static_in)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.no_grad(), torch.cuda.graph(graph):
                static_out = self.module(static_in)
            entry = (graph, static_in, static_out)
            self._graphs[batch_size] = entry
        return entry

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """``(B, H, W, 3)`` uint8 RGB -> the raw outputs (``YOLACT_OUTPUTS``/``ROI_OUTPUTS``), float32 arrays."""
        self._check_batch(batch)
        images = torch.from_numpy(np.ascontiguousarray(batch))
        try:
            if self.cuda_graphs:
                graph, static_in, static_out = self._graph_for(images.shape[0])
                static_in.copy_(images, non_blocking=False)
                graph.replay()
                outputs = static_out
            else:
                with torch.inference_mode():
                    outputs = self.module(images.to(self.device))
            return {name: out.detach().float().cpu().numpy() for name, out in zip(self.output_names, outputs)}
        except RuntimeError as exc:
            raise BackendError(f"PyTorch failed running {self.model_path}: {exc}") from None

    def close(self) -> None:
        self._graphs.clear()
        self.module = None  # type: ignore[assignment]
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


__all__ = ["TorchBackend"]
