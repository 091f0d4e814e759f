#!/usr/bin/env bash
# Development set-up: a venv with ROS 2 from PyPI wheels and every Python dependency,
# installed exactly from a lock file (hash-checked), and the interfaces built by colcon as
# on a robot. Idempotent: each step is skipped when its inputs have not changed.
#
#   dev/setup.sh            ROS 2 Kilted: ./.venv, build/install (`make setup`)
#   dev/setup.sh jazzy      ROS 2 Jazzy:  ./.venv-jazzy, build/jazzy/install (`make test-jazzy`)
set -euo pipefail
# shellcheck source=dev/common.sh
source "$(dirname "$0")/common.sh"
cd "$ROOT"
DISTRO=${1:-kilted}
case $DISTRO in
  kilted) VENV=$ROOT/.venv; BUILD=$ROOT/build; LOCK=dev/requirements.lock ;;
  jazzy) VENV=$ROOT/.venv-jazzy; BUILD=$ROOT/build/jazzy; LOCK=dev/requirements-jazzy.lock ;;
  *) echo "error: unknown ROS 2 distro '$DISTRO' (kilted or jazzy)" >&2; exit 2 ;;
esac
LOG_TAG="setup $DISTRO"
STAMPS=$VENV/.seg_perception_stamps

# The ROS 2 wheels are built for CPython 3.11.
py=$(pick_python 3.11) || { echo "error: CPython 3.11 is needed for the ROS 2 wheels (set PYTHON311=/path/to/python3.11)" >&2; exit 1; }
ensure_uv
install_python_env() {
  venv_from_lock "$VENV" "$py" "$LOCK"
  "$UV" pip install --quiet --python "$VENV/bin/python" --no-deps -e .
}
step "$STAMPS" python-env "$LOCK" pyproject.toml setup.py dev/requirements-bootstrap.lock -- install_python_env

# models/, config/ and launch/ too: the node finds its default model in the installed share directory.
step "$STAMPS" interfaces package.xml CMakeLists.txt msg/*.msg dev/pip_ros_fixups.cmake "$LOCK" \
  models/*.onnx models/*.json config/* launch/*.py -- build_interfaces "$VENV" "$BUILD"
[ -f "$BUILD/install/setup.bash" ] || { rm -f "$STAMPS/interfaces"; build_interfaces "$VENV" "$BUILD"; }

if [ "$DISTRO" = kilted ]; then
  # The default demo recording: a synthetic RGB-D bag (colour, registered depth,
  # camera_info, COCO ground truth) of the shipped model's object classes, rendered
  # deterministically from a fixed seed in a few seconds instead of being committed.
  DEMO_RECORDING=build/demo_recording
  make_demo_recording() {
    rm -rf "$DEMO_RECORDING"
    PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$VENV/bin/python" -m seg_perception.tools.cli generate-recording \
      "$DEMO_RECORDING" --frames 30 --fps 15 --seed 7 --width 640 --height 480 --quiet
  }
  step "$STAMPS" demo-recording seg_perception/synth/*.py -- make_demo_recording
  [ -f "$DEMO_RECORDING/ground_truth.json" ] || { rm -f "$STAMPS/demo-recording"; make_demo_recording; }
fi
log "ready: source dev/env.sh${1:+ $1}"
