"""``seg-perception <command> [args]``: one entry point for the package's tools.

Each command lives in its own module with a ``main(argv) -> int``; modules are
imported only when their command runs, so ``--help`` is instant and a command
that needs torch does not slow down one that does not.
"""

from __future__ import annotations

import importlib
import sys

# command -> (module, function, one-line summary)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": ("seg_perception.tools.demo", "main", "run the node on a recording; write an output bag and overlays"),
    "bench": ("seg_perception.tools.bench", "main", "speed: backends, the node over DDS, peers, post-processing"),
    "soak": ("seg_perception.tools.soak", "main", "the node under a fast camera for a long time: latency, RSS, drops"),
    "export": ("seg_perception.tools.export", "main", "weights + metadata -> ONNX model and metadata JSON"),
    "engine": ("seg_perception.tools.engine", "main", "ONNX model -> TensorRT engine (FP16/INT8), cached per GPU/TensorRT"),
    "quantize": ("seg_perception.tools.quantize", "main", "ONNX model -> FP16 or INT8 (Q/DQ) ONNX for TensorRT 8.6-11, accuracy-gated"),
    "synth-eval": ("seg_perception.tools.synth_eval", "main", "tracking / 3D accuracy against synthetic ground truth"),
    "generate-dataset": ("seg_perception.synth.cli", "main_generate_dataset", "synthetic RGB-D scenes as a COCO dataset"),
    "generate-recording": ("seg_perception.synth.cli", "main_generate_recording", "synthetic camera recording as a rosbag2 bag"),
    "regress": ("seg_perception.tools.regress", "main", "replay bags, compare the outputs with a golden run (CI exit code)"),
    "train": ("seg_perception.tools.train", "main", "train a model on a COCO-format dataset (checkpoints, curves, ONNX)"),
    "evaluate": ("seg_perception.tools.evaluate", "main", "COCO mask/box/keypoint AP of a model on a dataset or an annotated bag"),
}


def usage() -> str:
    width = max(len(c) for c in COMMANDS)
    lines = ["usage: seg-perception <command> [options]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {summary}" for name, (_, _, summary) in COMMANDS.items()]
    lines += ["", "`seg-perception <command> --help` describes a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"seg-perception: unknown command '{command}'\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, func_name, _ = COMMANDS[command]
    func = getattr(importlib.import_module(module_name), func_name)
    result = func(rest)
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
