"""Accuracy of detections against annotations, in one place.

- ``coco``: COCO mask/box/keypoint AP of ``Detections`` per image (pycocotools), per-class
  AP and precision-recall curves from the same COCOeval run; pairing annotated images
  with a recording's frames by stamp.
- ``evaluator``: the one evaluator (frames through a predictor, timed, scored), used by
  training, ``seg-perception evaluate``, ``seg-perception regress --annotations`` and the
  shipped model's release record.
- ``report``: the report as a table and a precision-recall plot.
"""
