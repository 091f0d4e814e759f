"""Reading, checking and writing model weights.

Safety: ``.pth`` files are pickles, and unpickling runs code. Every file is read with
``torch.load(path, map_location="cpu", weights_only=True)``, whose restricted
unpickler only rebuilds tensors and plain containers and refuses anything else, so a
crafted or tampered checkpoint cannot execute code here. Do not add a fallback to
``weights_only=False``.

Strictness: a state dict must match the model key for key and shape for shape. A
mismatch is an error that names every missing, unexpected and mismatched key, because
a silently half-loaded detector still runs and produces plausible nonsense. The only
tolerated differences:

- keys of training-only heads the model does not have (``semantic_seg_conv.*``,
  ``class_existence_fc.*`` in the official checkpoints) are ignored;
- keys the official ``Yolact.load_weights`` drops for backward compatibility
  (``backbone.layerN.*`` duplicates of ``backbone.layers.*`` and FPN downsample layers
  beyond the configured number) are ignored;
- ``*.num_batches_tracked`` may be absent (checkpoints from old PyTorch versions, and
  detectron2 ones whose norms are ``FrozenBatchNorm2d``); BatchNorm only uses it while
  training with momentum=None;
- keys a model lists in its ``checkpoint_ignored_keys`` attribute (exact names) are
  ignored: detectron2 checkpoints may carry the ``pixel_mean``/``pixel_std`` buffers
  of ``GeneralizedRCNN``, which our graphs replace by the metadata's mean/std.

Our own checkpoint format (``save_checkpoint``) is a dict with ``format``,
``architecture``, ``model_kwargs`` and ``state_dict``; a bare state dict (as the
official ``.pth`` files are) is accepted too.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

CHECKPOINT_FORMAT = "seg_perception.checkpoint/1"

# Heads that exist only for auxiliary training losses in the official checkpoints.
TRAINING_ONLY_PREFIXES = ("semantic_seg_conv.", "class_existence_fc.")
_LEGACY_BACKBONE = re.compile(r"^backbone\.layer\d")
_FPN_DOWNSAMPLE = re.compile(r"^fpn\.downsample_layers\.(\d+)\.")


class CheckpointError(RuntimeError):
    """A checkpoint could not be read or does not fit the model; the message names the file."""


@dataclass
class LoadReport:
    """What ``load_state_dict_strict`` did: keys loaded and keys deliberately skipped."""

    loaded: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # training-only or legacy keys in the file
    defaulted: list[str] = field(default_factory=list)  # optional keys absent from the file


def read_checkpoint(path: str | Path) -> Any:
    """Unpickle a checkpoint safely (tensors and plain containers only) onto the CPU."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint path is not a file: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint file {path} is empty")
    _require_torch_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses globals it does not know: a tampered or foreign file.
        raise CheckpointError(
            f"refused to load checkpoint {path}: it contains objects other than tensors and "
            f"plain containers, which weights_only=True does not unpickle "
            f"(a checkpoint saved with a custom class, or a malicious file): {_refusal_reason(exc)}"
        ) from None
    except (EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"checkpoint file {path} is truncated or corrupt: {_first_line(exc)}") from None
    except RuntimeError as exc:
        # torch's zip reader reports truncated/corrupt archives as RuntimeError.
        raise CheckpointError(f"checkpoint file {path} is truncated or corrupt: {_first_line(exc)}") from None
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        raise CheckpointError(
            f"checkpoint file {path} is not a readable PyTorch file ({type(exc).__name__}: {_first_line(exc)})"
        ) from None


def _require_torch_file(path: Path) -> None:
    """CheckpointError unless the file starts as ``torch.save`` writes (a zip archive, or a legacy pickle).

    Without this check torch's unpickler fails on such files with messages that say
    nothing useful ("KeyError: 101", or advice cut off before the reason).
    """
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return
    if path.suffix.lower() == ".onnx":
        what = "an ONNX model (already exported; give it to the node or `seg-perception evaluate --model`)"
    elif all(32 <= c < 127 or c in (9, 10, 13) for c in head):
        what = f"a text file (it starts with {head.decode('ascii', 'replace')!r})"
    else:
        what = f"neither a zip archive nor a pickle (it starts with bytes {head.hex(' ')})"
    raise CheckpointError(f"{path} is not a PyTorch checkpoint: {what}. Expected a .pth file written by torch.save, "
                          "e.g. checkpoints/last.pth of `seg-perception train` or an official YOLACT/CenterMask .pth")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _refusal_reason(exc: BaseException) -> str:
    # torch's message opens with advice to retry with weights_only=False; keep only the
    # line that says what was refused, never the advice.
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line or "Unsupported" in line:
            return line.split("WeightsUnpickler error:")[-1].split(". Please")[0].strip()  # not torch's advice
    for i, line in enumerate(lines):  # the reason may follow the marker on a line of its own
        if line.endswith("WeightsUnpickler error:") and i + 1 < len(lines):
            return lines[i + 1]
    return type(exc).__name__


def state_dict_of(checkpoint: Any, source: str = "<checkpoint>") -> dict[str, Tensor]:
    """The state dict inside a checkpoint: ours, a bare state dict, or ``{"state_dict"|"model": ...}``."""
    obj = checkpoint
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{source} holds no state dict (found {type(obj).__name__})")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"{source} is not a state dict: entries that are not named tensors: {bad[:5]}")
    # Checkpoints saved from nn.DataParallel prefix every key with "module.".
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def _ignorable(key: str, model_keys: set[str]) -> bool:
    if key.startswith(TRAINING_ONLY_PREFIXES):
        return True
    if _LEGACY_BACKBONE.match(key):
        return True
    m = _FPN_DOWNSAMPLE.match(key)
    if m:
        # Only extra downsample layers the model does not have (official v1.0 files).
        return not any(k.startswith(f"fpn.downsample_layers.{m.group(1)}.") for k in model_keys)
    return False


def load_state_dict_strict(model: nn.Module, state_dict: dict[str, Tensor], source: str = "<state dict>") -> LoadReport:
    """Copy ``state_dict`` into ``model`` if every key and shape matches, else raise ``CheckpointError``.

    The error lists the missing, unexpected and shape-mismatched keys by name (shapes
    included), prefixed by ``source`` (the file name).
    """
    expected = model.state_dict()
    model_keys = set(expected)
    report = LoadReport()
    missing = [k for k in expected if k not in state_dict and not k.endswith("num_batches_tracked")]
    report.defaulted = [k for k in expected if k not in state_dict and k.endswith("num_batches_tracked")]
    unexpected: list[str] = []
    mismatched: list[str] = []
    to_load: dict[str, Tensor] = {}
    model_ignored = set(getattr(model, "checkpoint_ignored_keys", ()))
    for key, value in state_dict.items():
        if key not in model_keys:
            (report.ignored if key in model_ignored or _ignorable(key, model_keys) else unexpected).append(key)
        elif tuple(value.shape) != tuple(expected[key].shape):
            mismatched.append(
                f"{key}: file has {tuple(value.shape)}, model expects {tuple(expected[key].shape)}"
            )
        else:
            to_load[key] = value
    if missing or unexpected or mismatched:
        lines = [f"{source} does not fit {type(model).__name__}:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): " + ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else ""))
        if unexpected:
            lines.append(
                f"  unexpected keys ({len(unexpected)}): " + ", ".join(unexpected[:20]) + (" ..." if len(unexpected) > 20 else "")
            )
        if mismatched:
            lines.append(f"  shape mismatches ({len(mismatched)}): " + "; ".join(mismatched[:20]))
        raise CheckpointError("\n".join(lines))
    # strict=False only because of the tolerated absences checked above.
    result = model.load_state_dict(to_load, strict=False)
    leftover = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if leftover or result.unexpected_keys:  # pragma: no cover - guarded by the checks above
        raise CheckpointError(f"{source}: load_state_dict disagreed: missing {leftover}, unexpected {result.unexpected_keys}")
    report.loaded = sorted(to_load)
    return report


def load_checkpoint(model: nn.Module, path: str | Path) -> LoadReport:
    """Read ``path`` safely and load it strictly into ``model`` (see the module docstring)."""
    path = Path(path)
    return load_state_dict_strict(model, state_dict_of(read_checkpoint(path), str(path)), str(path))


def save_checkpoint(model: nn.Module, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write our checkpoint format: weights plus how to rebuild the model.

    ``architecture`` and ``model_kwargs`` come from the builder (``model.architecture``,
    ``model.build_kwargs``); only plain types are stored so ``weights_only`` can read it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "architecture": str(getattr(model, "architecture", type(model).__name__)),
        "model_kwargs": dict(getattr(model, "build_kwargs", {})),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    if extra:
        payload.update(extra)
    torch.save(payload, path)
    return path


def checkpoint_model_spec(checkpoint: Any) -> tuple[str, dict[str, Any]] | None:
    """``(architecture, model_kwargs)`` from one of our checkpoints, or None for a bare state dict."""
    if isinstance(checkpoint, dict) and checkpoint.get("format") == CHECKPOINT_FORMAT:
        return str(checkpoint["architecture"]), dict(checkpoint.get("model_kwargs", {}))
    return None


__all__ = [
    "CHECKPOINT_FORMAT",
    "TRAINING_ONLY_PREFIXES",
    "CheckpointError",
    "LoadReport",
    "read_checkpoint",
    "state_dict_of",
    "load_state_dict_strict",
    "load_checkpoint",
    "save_checkpoint",
    "checkpoint_model_spec",
]
