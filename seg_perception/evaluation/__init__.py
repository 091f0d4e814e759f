"""Accuracy evaluation of detections against annotations (``coco``: COCO AP via pycocotools)."""
