"""Training of the package's models: COCO-format data, augmentation, losses, the training loop.

``dataset``  COCO-format images + RLE/polygon masks + keypoints (users train on their own data).
``augment``  torchvision.transforms.v2 pipelines that move masks and keypoints with the image.
``losses``   YOLACT's published losses plus the keypoint branch's.
``centermask_losses``  CenterMask's: FCOS (focal, GIoU, centerness) and the RoI heads' (mask, MaskIoU, keypoints).
``trainer``  optimiser, schedule, checkpoints/resume, progress, loss and AP curves (either family).

Everything here needs torch; nothing here is imported by the node.
"""
