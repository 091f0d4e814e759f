#!/usr/bin/env python3
"""Check that py-motmetrics gives the CLEAR-MOT/IDF1 figures of core.tracking_metrics on our
synthetic sequences (issue 16). Needs motmetrics (and pandas) outside the shared venv:

    python -m pip install --target /tmp/site_mot motmetrics
    source dev/env.sh && PYTHONPATH=$PYTHONPATH:/tmp/site_mot python dev/compare_motmetrics.py

Result with motmetrics 1.4.0 (2026-12-03): switches, fragmentations, MOTA, MOTP, IDF1, misses,
false positives, mostly tracked/lost agree on all 18 runs; ``num_matches`` differs by the
number of ID switches, which motmetrics counts as SWITCH events apart from its matches.
"""
import sys
import numpy as np
import motmetrics as mm
from seg_perception.core.tracking import Tracker
from seg_perception.core.tracking_metrics import MotAccumulator
from seg_perception.core.postprocess import box_iou
from seg_perception.synth import scene
from seg_perception.tools.synth_eval import DetectionNoise, detections_from_frame, gt_ids, perturb_detections

print("motmetrics", mm.__version__, "numpy", np.__version__)
rows = []
for seq_seed, n, (w, h) in ((0, 60, (320, 240)), (1, 120, (320, 240)), (2, 90, (640, 480))):
    seq = [(f.stamp_ns, detections_from_frame(f), gt_ids(f)) for f in scene.generate_sequence(seq_seed, n, width=w, height=h)]
    for noise_name, noise, seeds in (("clean", DetectionNoise.none(), [0]), ("noisy", DetectionNoise(), range(5))):
        for seed in seeds:
            rng = np.random.default_rng([seed, 8])
            t, ours, theirs = Tracker(None), MotAccumulator(0.5), mm.MOTAccumulator(auto_id=True)
            for stamp, perfect, ids in seq:
                noisy, _ = perturb_detections(perfect, ids, h, w, noise, rng)
                out = t.update(noisy, stamp)
                hyp = out.track_ids.astype(np.int64)
                ours.update_boxes(ids, perfect.boxes, hyp, out.boxes)
                keep = hyp != 0
                gb = np.asarray(perfect.boxes, np.float32).reshape(-1, 4)
                pb = np.asarray(out.boxes, np.float32).reshape(-1, 4)[keep]
                iou = box_iou(gb, pb) if len(gb) and len(pb) else np.zeros((len(gb), len(pb)))
                dist = np.where(iou >= 0.5, 1.0 - iou, np.nan)
                theirs.update(list(ids), list(hyp[keep]), dist)
            s = ours.summary()
            m = mm.metrics.create().compute(theirs, metrics=["num_frames", "num_matches", "num_misses", "num_false_positives",
                                                             "num_switches", "num_fragmentations", "mota", "motp", "idf1",
                                                             "mostly_tracked", "mostly_lost", "num_unique_objects"], name="x")
            m = m.iloc[0]
            pairs = {
                "frames": (s.num_frames, int(m.num_frames)), "matches": (s.num_matches, int(m.num_matches)),
                "misses": (s.num_misses, int(m.num_misses)), "fp": (s.num_false_positives, int(m.num_false_positives)),
                "switches": (s.num_id_switches, int(m.num_switches)),
                "frag": (s.num_fragmentations, int(m.num_fragmentations)),
                "mota": (round(s.mota, 6), round(float(m.mota), 6)), "motp_iou": (round(s.motp_iou, 6), round(1 - float(m.motp), 6)),
                "idf1": (round(s.idf1, 6), round(float(m.idf1), 6)),
                "MT": (s.mostly_tracked, int(m.mostly_tracked)), "ML": (s.mostly_lost, int(m.mostly_lost)),
                "unique_gt": (s.num_unique_gt, int(m.num_unique_objects)),
            }
            diff = {k: v for k, v in pairs.items() if v[0] != v[1]}
            print(f"seq {seq_seed} ({n} frames {w}x{h}) {noise_name} seed {seed}: "
                  + ("SAME " + str({k: v[0] for k, v in pairs.items() if k in ('switches', 'frag', 'mota', 'idf1')}) if not diff else f"DIFF {diff}"))
