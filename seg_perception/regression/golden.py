"""The on-disk form of a run (and of a golden run, which is a run kept for comparison).

```
RUN/
  manifest.json          written last: a directory without it is an incomplete run
  frames/<bag>.jsonl     one line per image (``records.frame_to_json``), for fast comparison
  outputs/<bag>/         rosbag2 (MCAP) bag of the node's outputs for that recording:
                         /seg_perception/instances, /seg_perception/keypoints, /seg_perception/model_info
```

``manifest.json`` records how the run was made: model (name, path, ONNX sha256),
backend, every parameter, the mode (offline or through ROS), and per recording its
path, topic, message type, storage and frame count.

``replace_golden`` installs a finished run as the golden run: it copies the run
beside the golden directory and swaps it in with renames, so an interrupted or failed
run never leaves a partial golden behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from seg_perception.regression.records import FrameResult, frame_from_json, frame_to_json

FORMAT = "seg_perception.regression/1"
MANIFEST = "manifest.json"
_RUN_ENTRIES = {MANIFEST, MANIFEST + ".tmp", "frames", "outputs"}


class GoldenError(RuntimeError):
    """A golden run is missing, incomplete or unreadable; the message names the path."""


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Run:
    """A run read back: its manifest and, per recording key, its frames in order."""

    path: Path
    manifest: dict[str, Any]
    frames: dict[str, list[FrameResult]] = field(default_factory=dict)


class RunWriter:
    """Writes a run directory frame by frame; ``finish`` writes the manifest last.

    ``add_bag`` opens the recording's frames file and output bag; ``write_frame``
    appends one frame and its serialised messages.
    """

    def __init__(self, path: str | Path, storage: str = "mcap") -> None:
        from seg_perception.bags import OutputBag  # rosbags: only needed when writing

        self._output_bag = OutputBag
        self.path = Path(path)
        if self.path.exists():
            # Replace only what looks like an earlier run: never delete a directory we did not write.
            if not self.path.is_dir() or any(p.name not in _RUN_ENTRIES for p in self.path.iterdir()):
                raise GoldenError(f"{self.path} exists and is not a run directory; choose another --out")
            shutil.rmtree(self.path)
        (self.path / "frames").mkdir(parents=True)
        (self.path / "outputs").mkdir()
        self.storage = storage
        self._bag: Any = None
        self._lines: TextIO | None = None
        self._key: str | None = None
        self.bags: list[dict[str, Any]] = []

    def add_bag(self, key: str, info: dict[str, Any]) -> None:
        self._close_bag()
        self._key = key
        self._lines = open(self.path / "frames" / f"{key}.jsonl", "w", encoding="utf-8")
        self._bag = self._output_bag(self.path / "outputs" / key, storage=self.storage)
        self.bags.append({"key": key, **info, "frames": 0, "frames_file": f"frames/{key}.jsonl",
                          "output_bag": f"outputs/{key}"})

    def set_bag_info(self, **info: Any) -> None:
        """Add entries to the current recording's manifest entry (e.g. its input digest)."""
        self.bags[-1].update(info)

    def write_message(self, topic: str, msgtype: str, timestamp_ns: int, cdr: bytes) -> None:
        self._bag.write(topic, msgtype, int(timestamp_ns), cdr)

    def write_frame(self, frame: FrameResult) -> None:
        assert self._lines is not None and frame.bag == self._key, "add_bag first"
        self._lines.write(json.dumps(frame_to_json(frame), separators=(",", ":")) + "\n")
        self.bags[-1]["frames"] += 1

    def _close_bag(self) -> None:
        if self._lines is not None:
            self._lines.close()
            self._lines = None
        if self._bag is not None:
            self._bag.close()
            self._bag = None

    def close(self) -> None:
        """Close files without a manifest (the run stays marked incomplete)."""
        self._close_bag()

    def finish(self, manifest: dict[str, Any]) -> Path:
        self._close_bag()
        full = {"format": FORMAT, "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                **manifest, "bags": self.bags}
        tmp = self.path / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(full, indent=2, sort_keys=False) + "\n")
        os.replace(tmp, self.path / MANIFEST)
        return self.path / MANIFEST


def update_manifest(path: str | Path, entries: dict[str, Any]) -> dict[str, Any]:
    """Add ``entries`` to a complete run's manifest (atomically); return the new manifest."""
    manifest_path = Path(path) / MANIFEST
    manifest = {**json.loads(manifest_path.read_text()), **entries}
    tmp = manifest_path.with_name(MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, manifest_path)
    return manifest


def load_run(path: str | Path, bags: list[str] | None = None) -> Run:
    """Read a run directory (``bags``: only these recordings' frames); GoldenError names the problem."""
    path = Path(path)
    if not path.is_dir():
        raise GoldenError(f"no golden run at {path}; create one with --update-golden")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise GoldenError(f"{path} is not a complete run (no {MANIFEST}); recreate it with --update-golden")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise GoldenError(f"cannot read {manifest_path}: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise GoldenError(f"{manifest_path}: format {manifest.get('format')!r} is not {FORMAT!r}")
    run = Run(path, manifest)
    for entry in manifest.get("bags", []):
        key = entry["key"]
        if bags is not None and key not in bags:
            continue
        frames_path = path / entry["frames_file"]
        frames: list[FrameResult] = []
        try:
            with open(frames_path, encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    try:
                        frames.append(frame_from_json(key, json.loads(line)))
                    except (KeyError, ValueError, TypeError) as exc:
                        raise GoldenError(f"{frames_path}:{lineno}: malformed frame record: {exc}") from None
        except OSError as exc:
            raise GoldenError(f"cannot read {frames_path}: {exc}") from None
        if len(frames) != entry.get("frames"):
            raise GoldenError(f"{frames_path} has {len(frames)} frames, the manifest says {entry.get('frames')}")
        run.frames[key] = frames
    return run


def replace_golden(run_dir: str | Path, golden_dir: str | Path) -> None:
    """Install the complete run ``run_dir`` as ``golden_dir``, replacing any old one.

    The copy goes to a hidden sibling of ``golden_dir`` (same filesystem), then two
    renames swap it in; on failure the old golden is put back. At no time does
    ``golden_dir`` hold a partial run.
    """
    run_dir, golden_dir = Path(run_dir), Path(golden_dir)
    if not (run_dir / MANIFEST).is_file():
        raise GoldenError(f"{run_dir} is not a complete run; the golden run is left as it was")
    parent = golden_dir.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{time.monotonic_ns()}"
    staging = parent / f".{golden_dir.name}.new-{tag}"
    retired = parent / f".{golden_dir.name}.old-{tag}"
    try:
        shutil.copytree(run_dir, staging)
        if golden_dir.exists():
            os.rename(golden_dir, retired)
        try:
            os.rename(staging, golden_dir)
        except OSError:
            if retired.exists():
                os.rename(retired, golden_dir)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(retired, ignore_errors=True)
