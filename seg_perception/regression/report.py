"""The human-readable summary of a comparison (the JSON report is ``Comparison.to_dict``)."""

from __future__ import annotations

from typing import Any, Sequence

from seg_perception.regression.compare import ADDED, CHANGED, LOST, Comparison


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda row: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)  # noqa: E731
                                for i, (c, w) in enumerate(zip(row, widths)))
    return [fmt(header), "  ".join("-" * w for w in widths), *(fmt(r) for r in rows)]


def _num(value: Any, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def summary_lines(comparison: Comparison, max_differences: int = 20) -> list[str]:
    """Per-bag table, the first differences (naming frame and instance), the verdict."""
    data = comparison.to_dict()
    rows = []
    for b in data["bags"]:
        rows.append([b["bag"], f"{b['frames_run']}/{b['frames_golden']}", str(b["instances_golden"]),
                     str(b["instances_run"]), str(b["matched"]), str(b[ADDED]), str(b[LOST]), str(b[CHANGED]),
                     _num(b["max_box_px"], 2), _num(b["max_score"], 4), _num(b["max_keypoint_px"], 2),
                     _num(b["min_mask_iou"], 4)])
    t = data["totals"]
    if len(rows) > 1:
        drift = data["drift"]
        rows.append(["total", f"{t['frames_run']}/{t['frames_golden']}", str(t["instances_golden"]),
                     str(t["instances_run"]), str(t["matched"]), str(t[ADDED]), str(t[LOST]), str(t[CHANGED]),
                     _num((drift["box_px"] or {}).get("max"), 2), _num((drift["score"] or {}).get("max"), 4),
                     _num((drift["keypoint_px"] or {}).get("max"), 2), _num((drift["mask_iou"] or {}).get("min"), 4)])
    lines = _table(["bag", "frames", "golden", "run", "matched", ADDED, LOST, CHANGED,
                    "box px", "score", "kpt px", "min IoU"], rows)
    drift = data["drift"]
    if drift["box_px"]:
        lines.append("drift over matched instances: box px mean {:.3f} p95 {:.3f}; score mean {:.4f} p95 {:.4f}{}".format(
            drift["box_px"]["mean"], drift["box_px"]["p95"], drift["score"]["mean"], drift["score"]["p95"],
            "" if not drift["keypoint_px"] else
            f"; keypoint px mean {drift['keypoint_px']['mean']:.3f} p95 {drift['keypoint_px']['p95']:.3f}"))
    problems = [(b["bag"], p) for b in data["bags"] for p in b["frame_problems"]]
    if problems:
        lines.append("")
        lines.append("frame problems:")
        for bag, p in problems[:max_differences]:
            lines.append(f"  {bag} frame {p['frame']}: {p['problem']}")
        if len(problems) > max_differences:
            lines.append(f"  ... and {len(problems) - max_differences} more (see the JSON report)")
    diffs = data["differences"]
    if diffs:
        lines.append("")
        lines.append("differences:")
        for d in diffs[:max_differences]:
            lines.append(f"  {d['text']}")
        if len(diffs) > max_differences:
            lines.append(f"  ... and {len(diffs) - max_differences} more (see the JSON report)")
    for problem in data["problems"]:
        lines.append(f"REGRESSION: {problem}")
    for note in data["notes"]:
        lines.append(f"note: {note}")
    lines.append("")
    tol = comparison.tolerances
    tol_text = (f"match IoU >= {tol.match_iou}, mask IoU >= {tol.mask_iou}, box <= {tol.box_px} px, "
                f"score <= {tol.score}, keypoints <= {tol.keypoint_px} px")
    if comparison.passed:
        lines.append(f"MATCH: {t['matched']} instances in {t['frames_compared']} frames agree with the golden run "
                     f"({tol_text})")
    else:
        lines.append(f"REGRESSION: {t[ADDED]} added, {t[LOST]} lost, {t[CHANGED]} changed instances in "
                     f"{t['frames_with_differences']} of {len(comparison.frames())} frames; "
                     f"{t['frame_problems']} frame problems ({tol_text})")
    return lines
