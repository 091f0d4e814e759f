"""An evaluation report for people: the AP table with per-class AP, and the PR-curve plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def save_pr_plot(report: dict[str, Any], path: Path) -> None:
    """precision-recall curves (class mean) of masks, boxes and keypoints."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [k for k in ("segm", "bbox", "keypoints") if report["pr_curves"].get(k)]
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.5 * len(kinds), 4), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        c = report["pr_curves"][kind]
        for key in ("precision@0.5", "precision@0.75", "precision@0.5:0.95"):
            ax.plot(c["recall"], c[key], label=key.replace("precision@", "IoU " if kind != "keypoints" else "OKS "))
        ap = (report.get(kind) or {}).get("AP")
        ax.set_title(f"{ {'segm': 'mask', 'bbox': 'box', 'keypoints': 'keypoint'}[kind]} AP {ap if ap is None else f'{ap:.3f}'}")
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{report.get('model', '')} on {Path(report['annotations']).parent.name} ({report['images']} images)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def format_report(report: dict[str, Any]) -> str:
    def f(v: Any) -> str:
        return "  -  " if v is None else f"{v:.3f}"

    lines = [f"model {report.get('model')}  images {report['images']}  detections {report['detections']}  "
             f"fps {report['fps']:.1f} (pre + inference + post, this machine)" if report.get("fps") else ""]
    lines.append(f"{'':10s} {'AP':>6s} {'AP50':>6s} {'AP75':>6s} {'APs':>6s} {'APm':>6s} {'APl':>6s}")
    for name, key in (("mask", "segm"), ("box", "bbox"), ("keypoints", "keypoints")):
        s = report.get(key)
        if s:
            lines.append(f"{name:10s} " + " ".join(f"{f(s.get(k)):>6s}" for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")))
    per = report.get("per_class", {})
    if per.get("segm"):
        lines.append("")
        lines.append(f"{'class':12s} {'mask AP':>8s} {'box AP':>8s} {'kpt AP':>8s}")
        for name in per["segm"]:
            lines.append(f"{name:12s} {f(per['segm'].get(name)):>8s} {f(per.get('bbox', {}).get(name)):>8s} "
                         f"{f(per.get('keypoints', {}).get(name)):>8s}")
    for note in report.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)
