"""Command-line entry points for the synthetic data generator.

Plain functions taking ``argv`` (without the program name) and returning an exit
status, so the ``seg-perception`` CLI can mount them as sub-commands and tests can
call them directly.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _dataset_parser(prog: str = "seg-perception generate-dataset") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Write a synthetic RGB-D instance segmentation dataset "
                                "(COCO annotations with masks, keypoints, track ids and 3D centroids).")
    p.add_argument("out_dir", type=Path, help="output directory (images/, depth/, depth_gt/, annotations.json)")
    p.add_argument("-n", "--num-images", type=int, default=1000, help="number of images (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same dataset (default 0)")
    p.add_argument("--width", type=int, default=384, help="image width in pixels (default 384)")
    p.add_argument("--height", type=int, default=288, help="image height in pixels (default 288)")
    p.add_argument("--image-format", choices=("png", "jpg"), default="png", help="RGB file format (default png)")
    p.add_argument("--depth-format", choices=("png", "npy"), default="png",
                   help="depth files: png = uint16 millimetres, npy = float32 metres (default png)")
    p.add_argument("-j", "--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--contact-sheet", type=Path, default=None,
                   help="also write a PNG grid of the first frames with their ground truth drawn on")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main_generate_dataset(argv: list[str] | None = None) -> int:
    """``seg-perception generate-dataset OUT_DIR [-n N] [--seed S] ...``"""
    args = _dataset_parser().parse_args(argv)
    from seg_perception.synth.coco import write_coco_dataset

    if args.num_images < 0 or args.width < 16 or args.height < 16 or args.workers < 1:
        print("error: --num-images must be >= 0, --width/--height >= 16 and --workers >= 1", file=sys.stderr)
        return 2
    path = write_coco_dataset(args.out_dir, args.num_images, args.seed, args.width, args.height,
                              image_format=args.image_format, depth_format=args.depth_format,
                              workers=args.workers, progress=not args.quiet)
    print(f"wrote {args.num_images} images and {path}")
    if args.contact_sheet is not None:
        _contact_sheet_from_seed(args.contact_sheet, args.seed, args.width, args.height,
                                 min(12, max(args.num_images, 1)))
        print(f"wrote contact sheet {args.contact_sheet}")
    return 0


def _recording_parser(prog: str = "seg-perception generate-recording") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Write a synthetic RGB-D rosbag2 recording (colour, "
                                "registered 32FC1 depth, camera_info) with COCO ground truth per frame.")
    p.add_argument("bag", type=Path, help="bag directory to create (must not exist)")
    p.add_argument("-n", "--frames", type=int, default=150, help="number of frames (default 150)")
    p.add_argument("--fps", type=float, default=15.0, help="frame rate in Hz (default 15)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--width", type=int, default=640, help="image width in pixels (default 640)")
    p.add_argument("--height", type=int, default=480, help="image height in pixels (default 480)")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="rosbag2 storage (default mcap)")
    p.add_argument("--gt", type=Path, default=None, help="ground-truth JSON path (default BAG/ground_truth.json)")
    p.add_argument("--no-depth", action="store_true", help="colour and its camera_info only (no depth topics)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main_generate_recording(argv: list[str] | None = None) -> int:
    """``seg-perception generate-recording BAG [-n FRAMES] [--fps HZ] [--storage mcap|sqlite3] ...``"""
    args = _recording_parser().parse_args(argv)
    from seg_perception.synth.recording import write_recording

    if args.frames < 1 or args.fps <= 0 or args.width < 16 or args.height < 16:
        print("error: --frames must be >= 1, --fps > 0 and --width/--height >= 16", file=sys.stderr)
        return 2
    if args.bag.exists():
        print(f"error: {args.bag} exists already; choose a new bag path", file=sys.stderr)
        return 2
    gt = write_recording(args.bag, args.seed, args.frames, args.fps, args.width, args.height,
                         storage=args.storage, gt_path=args.gt, progress=not args.quiet, depth=not args.no_depth)
    print(f"wrote {args.frames} frames to {args.bag} ({args.storage}); ground truth {gt}")
    return 0


def _contact_sheet_from_seed(path: Path, seed: int, width: int, height: int, n: int) -> None:
    from seg_perception.synth.preview import save_contact_sheet
    from seg_perception.synth.scene import generate_frame

    save_contact_sheet([generate_frame(seed, i, width, height) for i in range(n)], path, cols=4,
                       tile_width=min(width, 384))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main_generate_dataset())
