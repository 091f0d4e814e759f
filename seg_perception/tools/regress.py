"""``seg-perception regress``: replay recordings, compare the outputs with a golden run.

Runs every image of the given rosbag2 recordings (sqlite3 or MCAP; raw or compressed
images) through the segmentation pipeline (offline, no ROS needed) or through the
real node over DDS (``--through-ros``), writes the node's output messages to a bag
per recording, and compares the outputs with the golden run in ``--golden``:
instances matched per frame by mask IoU, counted as added, lost or changed (class,
mask IoU, box, score or keypoint drift beyond the tolerances).

Exit status: 0 the outputs match the golden run within the tolerances (or a new
golden run was written), 1 a regression was found, 2 an error (unreadable bag,
missing topic, bad frame, missing golden run, model that does not load, ...).
``--update-golden`` replaces the golden run only after a complete, successful run.
``--ray [ADDRESS]`` runs the recordings as tasks on a local Ray or a Ray cluster
(``regression.distributed``), with the serial run's outputs, byte for byte.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

EXIT_MATCH, EXIT_REGRESSION, EXIT_ERROR = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    from seg_perception.regression.compare import Tolerances

    tol = Tolerances()
    p = argparse.ArgumentParser(prog="seg-perception regress", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bags", nargs="+", metavar="BAG", help="rosbag2 recordings (directory, or .mcap/.db3 file)")
    p.add_argument("--golden", required=True, metavar="DIR", help="golden run directory to compare with (or to write)")
    p.add_argument("--update-golden", action="store_true",
                   help="after a complete, successful run, make it the golden run (replacing the old one)")
    p.add_argument("--out", default="regress_output", metavar="DIR",
                   help="where this run goes: DIR/run (same format as a golden run) and DIR/report.json "
                        "(default: %(default)s; DIR/run is replaced)")
    p.add_argument("--report", default=None, metavar="PATH", help="JSON report path (default: OUT/report.json)")
    p.add_argument("--topic", default=None,
                   help="image topic (default: the only colour image topic of each bag); several, comma-separated, "
                        "or 'all' (every colour image topic) for a recording of several cameras: each camera is "
                        "replayed, tracked and compared on its own")
    g = p.add_argument_group("model and parameters")
    g.add_argument("--params", default="", metavar="YAML",
                   help="the node's parameter file (default: the package's config/seg_perception.yaml)")
    g.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                   help="override one parameter (YAML value), e.g. -p score_threshold=0.4; repeatable")
    g.add_argument("--model", default="", help="model path (default: the params file's model_path, else the shipped model)")
    g.add_argument("--backend", default="", help="backend override: auto, onnxruntime, tensorrt, torch")
    r = p.add_argument_group("through-ROS mode")
    r.add_argument("--through-ros", action="store_true",
                   help="replay into the real node (own process, own namespace) over DDS and record what it publishes")
    r.add_argument("--rate", type=float, default=0.0,
                   help="replay speed: 0 = lockstep (next frame once the last output arrived; nothing dropped), "
                        "1.0 = real time, 2.0 = twice as fast (default: %(default)s)")
    r.add_argument("--use-sim-time", action="store_true",
                   help="start the node with use_sim_time and publish the bag time on its /clock")
    r.add_argument("--timeout", type=float, default=30.0,
                   help="seconds to wait for an output (lockstep: per frame; timed: after the last frame)")
    r.add_argument("--domain-id", type=int, default=None,
                   help="ROS_DOMAIN_ID for the node and the player (default: $ROS_DOMAIN_ID, else a random one)")
    ray = p.add_argument_group("on a Ray cluster (pip install 'seg_perception[fleet]')")
    ray.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                     help="run the recordings as Ray tasks, each worker loading the model once: without ADDRESS on "
                          "a local Ray started for this run, with it on that cluster (e.g. ray://head:10001, or "
                          "auto for the cluster this machine belongs to); outputs are the serial run's, byte for "
                          "byte. A recording right after --ray is a recording, not an address")
    ray.add_argument("--ray-workers", type=int, default=None, metavar="N",
                     help="workers (model copies) to start (default: the CPUs of the local Ray or the cluster, "
                          "divided by --ray-cpus-per-worker)")
    ray.add_argument("--ray-cpus-per-worker", type=int, default=1, metavar="N",
                     help="CPUs Ray reserves per worker; with threads=0 the backend uses that many (%(default)s)")
    rec = p.add_argument_group("outputs recorded on a robot")
    rec.add_argument("--recorded", action="append", default=[], metavar="OUTPUT_BAG",
                     help="instead of running the model, take the outputs `ros2 bag record` kept of the node while "
                          "`ros2 bag play` replayed BAG (one per BAG, in the same order); outputs pair with images "
                          "by header stamp")
    t = p.add_argument_group("tolerances")
    t.add_argument("--match-iou", type=float, default=tol.match_iou, help="mask IoU to pair two instances (%(default)s)")
    t.add_argument("--mask-iou", type=float, default=tol.mask_iou, help="a pair below this mask IoU has changed (%(default)s)")
    t.add_argument("--box-tol", type=float, default=tol.box_px, help="allowed box edge drift, pixels (%(default)s)")
    t.add_argument("--score-tol", type=float, default=tol.score, help="allowed score drift (%(default)s)")
    t.add_argument("--keypoint-tol", type=float, default=tol.keypoint_px, help="allowed keypoint drift, pixels (%(default)s)")
    t.add_argument("--allow-dropped", action="store_true",
                   help="frames the node dropped (timed replay, or recorded on a robot) are reported but not a regression")
    a = p.add_argument_group("accuracy")
    a.add_argument("--annotations", default=None, metavar="COCO.json",
                   help="COCO annotations of the frames: report mask/box AP, AP50, AP75 and keypoint AP. Images "
                        "pair with frames by header stamp when every image has 'stamp_ns' (or 'stamp': {sec, "
                        "nanosec}), else by index (images sorted by id = frames of the bags in the given order)")
    a.add_argument("--ap-drop", type=float, default=0.01,
                   help="an AP lower than the golden run's by more than this is a regression (%(default)s)")
    o = p.add_argument_group("output")
    o.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="output bag storage (%(default)s)")
    o.add_argument("--max-differences", type=int, default=20, help="differences listed in the summary (%(default)s)")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def default_params_path() -> Path:
    """The package's parameter file (``resources``: the checkout's, else the installed share directory's)."""
    from seg_perception.resources import default_params_file

    return default_params_file()


def effective_params(args: argparse.Namespace) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """(params file, every parameter value, the values given on the command line)."""
    import yaml

    from seg_perception import params as param_specs
    from seg_perception.pipeline import resolve_model_path

    params_file = Path(args.params) if args.params else default_params_path()
    values = param_specs.load_params_yaml(params_file)
    given: dict[str, Any] = {}
    for item in args.param:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--param wants NAME=VALUE, got {item!r}")
        given[name.strip()] = yaml.safe_load(text) if text.strip() else ""
    if args.model:
        given["model_path"] = args.model
    if args.backend:
        given["backend"] = args.backend
    try:
        values = param_specs.validate({**values, **given})
    except ValueError as exc:
        raise ValueError(f"parameters: {exc}") from None
    if not values["model_path"]:  # the manifest records the model actually run
        values["model_path"] = str(resolve_model_path(values["model_path"]))
    return params_file, values, given


def _param_notes(golden: dict[str, Any], current: dict[str, Any]) -> list[str]:
    notes = []
    gp, cp = golden.get("params") or {}, current.get("params") or {}
    for name in sorted(set(gp) & set(cp)):
        if gp.get(name) != cp.get(name) and name != "model_path":
            notes.append(f"parameter {name}: golden {gp.get(name)!r}, this run {cp.get(name)!r}")
    gm, cm = golden.get("model", {}), current.get("model", {})
    if gm.get("sha256") != cm.get("sha256"):
        notes.append(f"model differs from the golden run's: golden {gm.get('name')} (sha256 "
                     f"{str(gm.get('sha256'))[:12]}), this run {cm.get('name')} (sha256 {str(cm.get('sha256'))[:12]})")
    golden_inputs = {b["key"]: b.get("input_sha256") for b in golden.get("bags", [])}
    for b in current.get("bags", []):
        old = golden_inputs.get(b["key"])
        if old and b.get("input_sha256") and old != b["input_sha256"]:
            notes.append(f"recording {b['key']}: its images differ from those the golden run was made from "
                         f"(input sha256 {old[:12]} -> {b['input_sha256'][:12]}): a changed recording, not "
                         "only a changed model")
    if golden.get("mode") != current.get("mode"):
        notes.append(f"golden run made {golden.get('mode')}, this run {current.get('mode')}")
    return notes


def _evaluate(run_dir: Path, annotations: str, class_names: list[str]) -> dict[str, Any]:
    from seg_perception.evaluation.evaluator import evaluate_stamped
    from seg_perception.regression.golden import load_run

    run = load_run(run_dir)
    frames = [(f.stamp_ns, f.width, f.height, f.detections) for key in run.frames for f in run.frames[key]]
    return evaluate_stamped(frames, annotations, class_names)


def _ap_regressions(golden_eval: dict[str, Any] | None, current: dict[str, Any] | None, drop: float) -> list[str]:
    if not golden_eval or not current:
        return []
    out = []
    for kind in ("segm", "bbox", "keypoints"):
        for stat in ("AP", "AP50", "AP75"):
            g = (golden_eval.get(kind) or {}).get(stat)
            c = (current.get(kind) or {}).get(stat)
            if g is not None and c is not None and c < g - drop:
                out.append(f"{kind} {stat} fell from {g:.4f} to {c:.4f} (allowed drop {drop})")
    return out


def _format_eval(evaluation: dict[str, Any]) -> list[str]:
    def fmt(d: dict[str, Any] | None) -> str:
        if not d:
            return "-"
        return " ".join(f"{k} {'-' if d.get(k) is None else f'{d[k]:.4f}'}" for k in ("AP", "AP50", "AP75"))

    lines = [f"accuracy on {evaluation['images']} annotated frames ({evaluation['detections']} detections):",
             f"  mask      {fmt(evaluation['segm'])}", f"  box       {fmt(evaluation['bbox'])}"]
    if evaluation.get("keypoints"):
        lines.append(f"  keypoints {fmt(evaluation['keypoints'])}")
    lines += [f"  note: {n}" for n in evaluation.get("notes", [])]
    if evaluation.get("unmatched_classes"):
        lines.append(f"  note: classes without a category in the annotations: {', '.join(evaluation['unmatched_classes'])}")
    return lines


def _write_report(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")

    def clean(obj: Any) -> Any:  # NaN is not JSON
        if isinstance(obj, float) and math.isnan(obj):
            return None
        if isinstance(obj, dict):
            return {k: clean(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [clean(v) for v in obj]
        return obj

    tmp.write_text(json.dumps(clean(report), indent=2) + "\n")
    tmp.replace(path)


def _check_ray_args(args: argparse.Namespace) -> None:
    if args.through_ros or args.recorded:
        raise ValueError("--ray runs the offline pipeline; it does not combine with --through-ros or --recorded")
    if args.ray and Path(args.ray).exists():
        raise ValueError(f"--ray={args.ray}: that is a file here, not a Ray cluster address (ray://HOST:10001, "
                         "HOST:6379 or auto)")
    if args.ray_workers is not None and args.ray_workers < 1:
        raise ValueError(f"--ray-workers must be >= 1, got {args.ray_workers}")
    if args.ray_cpus_per_worker < 1:
        raise ValueError(f"--ray-cpus-per-worker must be >= 1, got {args.ray_cpus_per_worker}")


def _run_on_ray(args: argparse.Namespace, sources: list[Any], values: dict[str, Any], writer: Any, run_dir: Path,
                progress: Any, report: dict[str, Any]) -> dict[str, Any]:
    """The offline run on Ray workers (``regression.distributed``); the manifest entries.

    A failing recording raises its error (the first in command-line order) after the
    other recordings were written to ``run_dir`` (left without a manifest: incomplete).
    """
    from seg_perception.regression.distributed import run_distributed

    dist = run_distributed(sources, values, writer, address=args.ray or None, workers=args.ray_workers,
                           cpus_per_worker=args.ray_cpus_per_worker, progress=progress,
                           note=lambda line: print(line, file=sys.stderr))
    report["ray"] = {"address": args.ray or "local", "workers": dist.workers, "model_loads": len(dist.model_loads),
                     "timing": dist.timing, "recordings": dist.per_recording}
    if dist.failures:
        for extra in dist.failures[1:]:
            print(f"error: {extra.error}", file=sys.stderr)
        done = len(sources) - len(dist.failures)
        if done:
            print(f"note: the {done} other recording(s) finished; their outputs are in {run_dir} (an incomplete "
                  "run: no manifest)", file=sys.stderr)
        raise dist.failures[0].error
    print(f"ray: {dist.workers} worker(s), {len(dist.model_loads)} model load(s)")
    return dist.entries


def run(args: argparse.Namespace, report: dict[str, Any]) -> int:
    """The command's work; raises for errors (exit 2), returns 0 or 1."""
    from tqdm import tqdm

    from seg_perception.regression.compare import Tolerances, class_list_change, compare_runs, explain_low_scores
    from seg_perception.regression.golden import GoldenError, RunWriter, load_run, replace_golden, update_manifest
    from seg_perception.regression.report import summary_lines
    from seg_perception.regression.sources import inspect_bags

    t_start = time.monotonic()
    tolerances = Tolerances(match_iou=args.match_iou, mask_iou=args.mask_iou, box_px=args.box_tol,
                            score=args.score_tol, keypoint_px=args.keypoint_tol, allow_dropped=args.allow_dropped)
    if args.rate < 0:
        raise ValueError(f"--rate must be >= 0, got {args.rate}")
    if (args.rate or args.use_sim_time) and not args.through_ros:
        raise ValueError("--rate and --use-sim-time apply to --through-ros runs only")
    if args.recorded and args.through_ros:
        raise ValueError("--recorded takes outputs recorded elsewhere; it does not combine with --through-ros")
    if args.ray is not None:
        _check_ray_args(args)
    params_file, values, given = effective_params(args)
    sources = inspect_bags(args.bags, args.topic)
    keys = [s.key for s in sources]
    golden_dir = Path(args.golden)
    golden = None
    if not args.update_golden:
        golden = load_run(golden_dir, bags=keys)
        missing = [k for k in keys if k not in golden.frames]
        if missing:
            raise GoldenError(f"the golden run {golden_dir} has no recording {', '.join(missing)} (it has: "
                              f"{', '.join(e['key'] for e in golden.manifest.get('bags', [])) or 'none'}); "
                              "record it with --update-golden")
    elif golden_dir.exists():
        try:
            golden = load_run(golden_dir, bags=keys)
        except GoldenError as exc:
            print(f"note: the old golden run is not comparable ({exc}); it will be replaced", file=sys.stderr)

    out = Path(args.out)
    run_dir = out / "run"
    writer = RunWriter(run_dir, storage=args.storage)
    mode = "through_ros" if args.through_ros else "recorded" if args.recorded else "offline"
    total = sum(s.frames for s in sources)
    bar = tqdm(total=total, unit="frame", desc=f"regress ({mode})", disable=True if args.no_progress else None,
               file=sys.stderr)
    try:
        if args.through_ros:
            from seg_perception.regression.through_ros import run_through_ros

            overrides = {k: (json.dumps(v) if isinstance(v, str) else v) for k, v in values.items()}
            overrides["autostart"] = True
            entries = run_through_ros(sources, params_file=params_file, values=values, overrides=overrides,
                                      writer=writer, log_path=out / "node.log", rate=args.rate,
                                      use_sim_time=args.use_sim_time, timeout=args.timeout,
                                      domain_id=args.domain_id, progress=bar.update)
        elif args.recorded:
            from seg_perception.regression.recorded import run_recorded

            entries = run_recorded(sources, args.recorded, writer, progress=bar.update)
        elif args.ray is not None:
            entries = _run_on_ray(args, sources, values, writer, run_dir, bar.update, report)
        else:
            from seg_perception.pipeline import load_pipeline
            from seg_perception.regression.offline import backend_description, model_description, run_offline

            pipeline = load_pipeline(values)
            try:
                entries = {"model": model_description(pipeline, Path(values["model_path"])),
                           "backend": backend_description(pipeline, values)}
                run_offline(sources, pipeline, values, writer, progress=bar.update)
            finally:
                pipeline.close()
    finally:
        bar.close()
        writer.close()
    elapsed = time.monotonic() - t_start
    manifest = {"mode": mode, **entries, "params": None if args.recorded else values,
                "params_file": None if args.recorded else str(params_file),
                "rate": args.rate if args.through_ros else None, "use_sim_time": bool(args.use_sim_time)}
    writer.finish(manifest)
    current = load_run(run_dir)
    report.update({"mode": mode, "run": str(run_dir), "golden": str(golden_dir), "model": entries["model"],
                   "backend": entries["backend"], "params": None if args.recorded else values, "params_given": given,
                   "bags": current.manifest["bags"],
                   "timing": {"seconds": round(elapsed, 3), "frames": total,
                              "frames_per_second": round(total / elapsed, 3) if elapsed > 0 else None}})

    evaluation = None
    if args.annotations:
        evaluation = _evaluate(run_dir, args.annotations, entries["model"]["class_names"] or None)
        current.manifest = update_manifest(run_dir, {"evaluation": evaluation})
        report["evaluation"] = evaluation

    print(f"{mode} run of {total} frames from {len(sources)} recording(s) in {elapsed:.1f} s; "
          f"output bags under {run_dir / 'outputs'}")
    status, code = "updated", EXIT_MATCH
    if golden is not None:
        comparison = compare_runs(golden.frames, current.frames, tolerances)
        comparison.notes += _param_notes(golden.manifest, current.manifest)
        class_change = class_list_change((golden.manifest.get("model") or {}).get("class_names"),
                                         (current.manifest.get("model") or {}).get("class_names"))
        if class_change:
            comparison.problems.append(class_change)
        if values and values.get("tracking_enabled") and not args.recorded:
            explain_low_scores(comparison, float(values["score_threshold"]), float(values["tracking_low_score"]))
        ap_problems = _ap_regressions(golden.manifest.get("evaluation"), evaluation, args.ap_drop)
        report["comparison"] = comparison.to_dict()
        report["ap_regressions"] = ap_problems
        report["golden_evaluation"] = golden.manifest.get("evaluation")
        print(f"compared with the golden run {golden_dir} ({golden.manifest.get('mode')}, "
              f"created {golden.manifest.get('created_utc')}):")
        for line in summary_lines(comparison, args.max_differences):
            print(line)
        for line in ap_problems:
            print(f"REGRESSION: {line}")
        passed = comparison.passed and not ap_problems
        if not args.update_golden:
            status, code = ("match", EXIT_MATCH) if passed else ("regression", EXIT_REGRESSION)
    if evaluation is not None:
        for line in _format_eval(evaluation):
            print(line)
    if args.update_golden:
        if golden is not None:
            left_out = [e["key"] for e in golden.manifest.get("bags", []) if e["key"] not in keys]
            if left_out:
                print(f"note: the new golden run holds only this run's recordings; it no longer has "
                      f"{', '.join(left_out)}")
        replace_golden(run_dir, golden_dir)
        print(f"golden run updated: {golden_dir}")
    report["status"] = status
    report["exit_code"] = code
    return code


def _local_ray_before_bags(argv: list[str]) -> list[str]:
    """``--ray BAG ...``: a recording right after ``--ray`` is a recording, not the cluster
    address (argparse would take it as the address and then miss the recordings)."""
    out = list(argv)
    for i, arg in enumerate(out[:-1]):
        if arg == "--ray" and not out[i + 1].startswith("-") and Path(out[i + 1]).exists():
            out[i] = "--ray="
    return out


def main(argv: list[str] | None = None) -> int:
    argv = _local_ray_before_bags(sys.argv[1:] if argv is None else list(argv))
    args = build_parser().parse_args(argv)
    report_path = Path(args.report) if args.report else Path(args.out) / "report.json"
    report: dict[str, Any] = {"status": "error", "exit_code": EXIT_ERROR, "argv": list(sys.argv[1:] if argv is None else argv)}
    try:
        code = run(args, report)
    except KeyboardInterrupt:
        print("interrupted; the golden run is unchanged", file=sys.stderr)
        report["error"] = "interrupted"
        code = EXIT_ERROR
    except Exception as exc:  # every failure is exit 2 with one clear line; the golden run stays as it was
        from seg_perception.bags import BagError
        from seg_perception.regression.distributed import DistributedRunError
        from seg_perception.regression.golden import GoldenError
        from seg_perception.regression.sources import FrameError
        from seg_perception.regression.through_ros import NodeRunError
        from seg_perception.runtime.base import BackendError

        expected = (BagError, FrameError, GoldenError, NodeRunError, BackendError, DistributedRunError, ValueError,
                    OSError)
        kind = "" if isinstance(exc, expected) else f"{type(exc).__name__}: "
        print(f"error: {kind}{exc}", file=sys.stderr)
        if args.update_golden:
            print(f"the golden run {args.golden} was not changed", file=sys.stderr)
        report["error"] = f"{kind}{exc}"
        code = EXIT_ERROR
    report["exit_code"] = code
    try:
        _write_report(report_path, report)
        print(f"report: {report_path}")
    except OSError as exc:
        print(f"error: cannot write the report {report_path}: {exc}", file=sys.stderr)
        code = EXIT_ERROR
    return code


if __name__ == "__main__":
    raise SystemExit(main())
