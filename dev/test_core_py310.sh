#!/usr/bin/env bash
# The ROS-free, torch-free core on Python 3.10 with Humble-era NumPy (< 2), as a
# Jetson on Humble / JetPack 6 runs it. Skips (exit 0) when no Python 3.10 exists.
set -euo pipefail
cd "$(dirname "$0")/.."
py=""
for c in "${PYTHON310:-}" python3.10 "$HOME/.pyenv/versions/3.10"*/bin/python3.10; do
  if [ -n "$c" ] && "$c" -c "import sys; assert sys.version_info[:2] == (3, 10)" >/dev/null 2>&1; then py=$c; break; fi
done
if [ -z "$py" ]; then
  echo "[py310] no Python 3.10 on this machine; skipping the 3.10 core leg"
  exit 0
fi
VENV=.venv310
if [ ! -x "$VENV/bin/python" ]; then
  "$py" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
"$VENV/bin/python" -m pip install --quiet "numpy<2" "opencv-python-headless<4.12" pycocotools pyyaml tqdm rosbags pytest
echo "[py310] $("$VENV/bin/python" --version), numpy $("$VENV/bin/python" -c 'import numpy; print(numpy.__version__)')"
PYTHONPATH=$PWD "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
  test/test_core_*.py test/test_params.py test/test_streaming.py test/test_launch_args.py test/test_bags.py \
  test/test_regress_compare.py
