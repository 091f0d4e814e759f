#!/usr/bin/env bash
# Development set-up: ./.venv with ROS 2 Kilted from PyPI wheels, the package's
# Python dependencies, and the interfaces built by colcon as on a robot.
# Idempotent: each step is skipped when its inputs have not changed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv
STAMPS=$VENV/.seg_perception_stamps
log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

pick_python() {
  # The ROS 2 wheels are built for CPython 3.11.
  for c in "${PYTHON:-}" python3.11 python3; do
    [ -n "$c" ] || continue
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      echo "$c"; return 0
    fi
  done
  echo "error: CPython 3.11 is needed for the ROS 2 Kilted wheels (set PYTHON=/path/to/python3.11)" >&2
  return 1
}

if [ ! -x "$VENV/bin/python" ]; then
  py=$(pick_python)
  log "creating $VENV with $py"
  "$py" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
mkdir -p "$STAMPS"
PIP="$VENV/bin/python -m pip"

# step NAME INPUT_FILES... -- COMMAND...: run COMMAND unless the inputs are unchanged.
step() {
  local name=$1; shift
  local inputs=()
  while [ "$1" != "--" ]; do inputs+=("$1"); shift; done
  shift
  local sum
  sum=$(cat "${inputs[@]}" | sha256sum | cut -d' ' -f1)
  if [ -f "$STAMPS/$name" ] && [ "$(cat "$STAMPS/$name")" = "$sum" ]; then
    return 0
  fi
  log "$name"
  "$@"
  echo "$sum" > "$STAMPS/$name"
}

step ros-wheels dev/requirements-ros.txt -- \
  $PIP install --quiet -r dev/requirements-ros.txt
step torch dev/requirements-torch.txt -- \
  $PIP install --quiet -r dev/requirements-torch.txt
step python-deps pyproject.toml setup.py -- \
  $PIP install --quiet -e ".[onnx,torch,dev]"

build_interfaces() {
  # shellcheck disable=SC1091
  source "$VENV/bin/activate"
  # The wheels install share/ and lib/ under the venv prefix.
  export AMENT_PREFIX_PATH=$VENV CMAKE_PREFIX_PATH=$VENV
  colcon --log-base build/log build --base-paths "$ROOT" \
    --build-base build/colcon --install-base build/install \
    --event-handlers console_direct- summary+ \
    --cmake-args -DBUILD_TESTING=OFF \
      "-DPython3_EXECUTABLE=$VENV/bin/python" \
      "-DCMAKE_PROJECT_INCLUDE=$ROOT/dev/pip_ros_fixups.cmake" \
    2> >(grep -v "doesn't contain any 'local_setup" >&2)
}
# models/, config/ and launch/ too: the node finds its default model in the installed share directory.
step interfaces package.xml CMakeLists.txt msg/*.msg dev/pip_ros_fixups.cmake dev/requirements-ros.txt \
  models/*.onnx models/*.json config/* launch/*.py -- build_interfaces
[ -f build/install/setup.bash ] || { rm -f "$STAMPS/interfaces"; build_interfaces; }

# The default demo recording: a synthetic RGB-D bag (colour, registered depth,
# camera_info, COCO ground truth) of the shipped model's object classes, rendered
# deterministically from a fixed seed in a few seconds instead of being committed.
DEMO_RECORDING=build/demo_recording
make_demo_recording() {
  rm -rf "$DEMO_RECORDING"
  PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$VENV/bin/python" -m seg_perception.tools.cli generate-recording \
    "$DEMO_RECORDING" --frames 30 --fps 15 --seed 7 --width 640 --height 480 --quiet
}
step demo-recording seg_perception/synth/*.py -- make_demo_recording
[ -f "$DEMO_RECORDING/ground_truth.json" ] || { rm -f "$STAMPS/demo-recording"; make_demo_recording; }
log "ready: source dev/env.sh"
