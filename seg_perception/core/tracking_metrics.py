"""CLEAR-MOT tracking metrics (ID switches, fragmentations, MOTA) and IDF1.

Definitions follow Bernardin & Stiefelhagen 2008 ("Evaluating multiple object
tracking performance: the CLEAR MOT metrics") as specified for MOT16 (Milan et al.
2016) and implemented by py-motmetrics, so figures are comparable with published ones:

- Per frame, a ground-truth object and a hypothesis (a predicted track) may match
  when their similarity (box or mask IoU) is at least ``iou_threshold``.
- A correspondence from the previous frames is kept while it stays valid; the other
  objects and hypotheses are assigned by the Hungarian method (greedy without SciPy)
  maximising total IoU.
- **ID switch**: an object is matched to a hypothesis id other than the one it was
  last matched to (also after frames in which it was missed or out of view).
- **Fragmentation**: a tracked object becomes untracked (missed while present)
  and is tracked again later; counted once per interruption of its trajectory.
  Frames in which the object is absent from the ground truth (out of view) do not
  interrupt it.
- MOTA = 1 - (misses + false positives + ID switches) / ground-truth objects.
- IDF1 (Ristani et al. 2016): the F1 score of the best one-to-one mapping of whole
  ground-truth trajectories to whole predicted tracks.

Prediction id 0 means "not tracked" (``Instance.id``) and such predictions are not
scored; ground-truth ids must be nonzero and unique per frame.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from seg_perception.core.masks import mask_iou
from seg_perception.core.postprocess import box_iou
from seg_perception.core.tracking import match_pairs
from seg_perception.core.types import CroppedMask


@dataclass(frozen=True)
class MotSummary:
    """Totals over a sequence (counts are objects x frames unless noted)."""

    num_frames: int
    num_gt: int                 # ground-truth object occurrences
    num_predictions: int        # scored predicted occurrences (id != 0)
    num_matches: int
    num_misses: int             # false negatives
    num_false_positives: int
    num_id_switches: int
    num_fragmentations: int
    num_unique_gt: int          # ground-truth trajectories
    mostly_tracked: int         # trajectories matched in >= 80 % of their frames
    mostly_lost: int            # trajectories matched in < 20 % of their frames
    mota: float
    motp_iou: float             # mean IoU of the matches
    idf1: float

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class MotAccumulator:
    """Collects per-frame matching events; ``summary()`` gives the totals.

    Call one ``update*`` per frame, in order (also for frames without objects).
    """

    def __init__(self, iou_threshold: float = 0.5):
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
        self.iou_threshold = float(iou_threshold)
        self._last_match: dict[int, int] = {}        # gt id -> hypothesis id it was last matched to
        self._tracked_history: dict[int, list[bool]] = defaultdict(list)  # per gt id, frames present
        self._pair_hits: dict[tuple[int, int], int] = defaultdict(int)  # (gt, hyp) IoU >= thr, for IDF1
        self._gt_count: dict[int, int] = defaultdict(int)
        self._hyp_count: dict[int, int] = defaultdict(int)
        self.num_frames = 0
        self.num_matches = 0
        self.num_misses = 0
        self.num_false_positives = 0
        self.num_id_switches = 0
        self._iou_sum = 0.0
        self.events: list[tuple[int, str, int, int]] = []  # (frame, kind, gt id, hyp id), kind SWITCH only

    # -- per-frame input ---------------------------------------------------

    def update(self, gt_ids: Sequence[int], pred_ids: Sequence[int], similarity: np.ndarray) -> None:
        """One frame: ``similarity`` is (len(gt_ids), len(pred_ids)) IoU in [0, 1]."""
        gt = np.asarray(gt_ids, dtype=np.int64).reshape(-1)
        hyp = np.asarray(pred_ids, dtype=np.int64).reshape(-1)
        sim = np.asarray(similarity, dtype=np.float64).reshape(gt.size, hyp.size)
        if np.any(gt == 0) or len(set(gt.tolist())) != gt.size:
            raise ValueError("ground-truth ids must be nonzero and unique within a frame")
        scored = hyp != 0
        hyp, sim = hyp[scored], sim[:, scored]
        frame = self.num_frames
        self.num_frames += 1
        ok = sim >= self.iou_threshold

        for g in gt.tolist():
            self._gt_count[g] += 1
        for h in hyp.tolist():
            self._hyp_count[h] += 1
        for gi, hi in zip(*np.nonzero(ok)):
            self._pair_hits[(int(gt[gi]), int(hyp[hi]))] += 1

        matches: list[tuple[int, int]] = []
        free_g = np.ones(gt.size, bool)
        free_h = np.ones(hyp.size, bool)
        # Keep last frame's correspondences that are still valid.
        for gi, g in enumerate(gt.tolist()):
            h = self._last_match.get(g)
            if h is None:
                continue
            cand = np.flatnonzero((hyp == h) & free_h & ok[gi])
            if cand.size:
                hi = int(cand[np.argmax(sim[gi, cand])])
                matches.append((gi, hi))
                free_g[gi] = free_h[hi] = False
        # Assign the rest by maximum total IoU.
        rows, cols = np.flatnonzero(free_g), np.flatnonzero(free_h)
        sub = np.where(ok[np.ix_(rows, cols)], sim[np.ix_(rows, cols)], -np.inf)
        for r, c in match_pairs(sub, self.iou_threshold):
            gi, hi = int(rows[r]), int(cols[c])
            matches.append((gi, hi))
            free_g[gi] = free_h[hi] = False
            g, h = int(gt[gi]), int(hyp[hi])
            if g in self._last_match and self._last_match[g] != h:
                self.num_id_switches += 1
                self.events.append((frame, "SWITCH", g, h))

        for gi, hi in matches:
            self._last_match[int(gt[gi])] = int(hyp[hi])
            self._iou_sum += float(sim[gi, hi])
        self.num_matches += len(matches)
        self.num_misses += int(free_g.sum())
        self.num_false_positives += int(free_h.sum())
        for gi, g in enumerate(gt.tolist()):
            self._tracked_history[g].append(not free_g[gi])

    def update_boxes(self, gt_ids: Sequence[int], gt_boxes: np.ndarray, pred_ids: Sequence[int],
                     pred_boxes: np.ndarray) -> None:
        """One frame from (N, 4) x1, y1, x2, y2 boxes (pixels); similarity = box IoU."""
        gb = np.asarray(gt_boxes, dtype=np.float32).reshape(-1, 4)
        pb = np.asarray(pred_boxes, dtype=np.float32).reshape(-1, 4)
        self.update(gt_ids, pred_ids, box_iou(gb, pb) if len(gb) and len(pb) else np.zeros((len(gb), len(pb))))

    def update_masks(self, gt_ids: Sequence[int], gt_masks: Sequence[CroppedMask], pred_ids: Sequence[int],
                     pred_masks: Sequence[CroppedMask]) -> None:
        """One frame from cropped masks; similarity = mask IoU."""
        sim = np.zeros((len(gt_masks), len(pred_masks)))
        for i, g in enumerate(gt_masks):
            for j, p in enumerate(pred_masks):
                sim[i, j] = mask_iou(g, p)
        self.update(gt_ids, pred_ids, sim)

    # -- results -----------------------------------------------------------

    def _fragmentations(self) -> int:
        frag = 0
        for hist in self._tracked_history.values():
            h = np.asarray(hist, bool)
            idx = np.flatnonzero(h)
            if idx.size < 2:
                continue
            span = h[idx[0]:idx[-1] + 1]
            frag += int(np.count_nonzero(span[:-1] & ~span[1:]))  # tracked -> missed, later tracked again
        return frag

    def _idf1(self) -> float:
        total_gt = sum(self._gt_count.values())
        total_hyp = sum(self._hyp_count.values())
        if total_gt + total_hyp == 0:
            return 1.0
        gts = sorted(self._gt_count)
        hyps = sorted(self._hyp_count)
        idtp = 0
        if gts and hyps and self._pair_hits:
            gi = {g: i for i, g in enumerate(gts)}
            hi = {h: j for j, h in enumerate(hyps)}
            w = np.zeros((len(gts), len(hyps)))
            for (g, h), c in self._pair_hits.items():
                w[gi[g], hi[h]] = c
            idtp = int(sum(w[r, c] for r, c in match_pairs(np.where(w > 0, w, -np.inf), 1.0)))
        return 2.0 * idtp / (total_gt + total_hyp)

    def summary(self) -> MotSummary:
        num_gt = self.num_matches + self.num_misses
        ratios = [np.mean(h) for h in self._tracked_history.values()]
        return MotSummary(
            num_frames=self.num_frames,
            num_gt=num_gt,
            num_predictions=self.num_matches + self.num_false_positives,
            num_matches=self.num_matches,
            num_misses=self.num_misses,
            num_false_positives=self.num_false_positives,
            num_id_switches=self.num_id_switches,
            num_fragmentations=self._fragmentations(),
            num_unique_gt=len(self._tracked_history),
            mostly_tracked=int(sum(r >= 0.8 for r in ratios)),
            mostly_lost=int(sum(r < 0.2 for r in ratios)),
            mota=1.0 - (self.num_misses + self.num_false_positives + self.num_id_switches) / num_gt if num_gt else 1.0,
            motp_iou=self._iou_sum / self.num_matches if self.num_matches else 0.0,
            idf1=self._idf1(),
        )
