#!/usr/bin/env bash
# The Humble-era leg (`make test-humble`): Python 3.10 as on Ubuntu 22.04 / JetPack 6, from
# dev/requirements-humble-*.lock. Part 1: the ROS-free, torch-free core on NumPy 1.21.5 and
# OpenCV 4.5.4 exactly (Ubuntu's versions). Part 2: the oldest ONNX Runtime, onnx and torch
# that pyproject.toml admits, over the ONNX Runtime backend and offline regression (NumPy
# 1.21.6: onnxruntime 1.16.0 refuses 1.21.5). No ROS 2 Humble wheels exist, so no node here.
set -euo pipefail
# shellcheck source=dev/common.sh
source "$(dirname "$0")/common.sh"
cd "$ROOT"
LOG_TAG=humble
py=$(pick_python 3.10) || { echo "error: CPython 3.10 is needed for the Humble-era leg (set PYTHON310=/path/to/python3.10)" >&2; exit 1; }
ensure_uv
VENV=$ROOT/.venv-humble
pytest_leg() {
  log "$("$VENV/bin/python" -c 'import sys, numpy, cv2; print(f"Python {sys.version.split()[0]}, NumPy {numpy.__version__}, OpenCV {cv2.__version__}")')"
  PYTHONPATH=$ROOT "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
}
log "part 1: core (dev/requirements-humble-core.lock)"
venv_from_lock "$VENV" "$py" dev/requirements-humble-core.lock
pytest_leg test/core test/pipeline test/test_params.py test/ros/test_launch_args.py \
  test/test_bags.py test/regression/test_regress_compare.py
log "part 2: ONNX Runtime backend and offline regression (dev/requirements-humble-onnx.lock)"
venv_from_lock "$VENV" "$py" dev/requirements-humble-onnx.lock
log "onnxruntime $("$VENV/bin/python" -c 'import onnxruntime; print(onnxruntime.__version__)'), torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
pytest_leg test/runtime/test_runtime_onnxruntime.py test/regression/test_regress.py test/regression/test_regress_errors.py \
  test/evaluation/test_evaluation_coco.py
