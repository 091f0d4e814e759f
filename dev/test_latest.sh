#!/usr/bin/env bash
# `make test-latest` (not part of CI): the newest releases that pyproject.toml's ranges admit
# (torch too), in a throw-away venv, then the whole suite. It finds the next OpenCV, NumPy or
# ONNX Runtime that changes results before a user does. Prints what differs from the lock.
set -euo pipefail
# shellcheck source=dev/common.sh
source "$(dirname "$0")/common.sh"
cd "$ROOT"
LOG_TAG=latest
py=$(pick_python 3.11) || { echo "error: CPython 3.11 is needed for the ROS 2 wheels" >&2; exit 1; }
ensure_uv
work=$(mktemp -d "${TMPDIR:-/tmp}/seg_perception_latest.XXXXXX")
trap 'rm -rf "$work"' EXIT
grep -v -E '^(torch|torchvision)==' dev/requirements.in > "$work/latest.in"
sed -i "s|^-r |-r $ROOT/dev/|" "$work/latest.in"
"$UV" pip compile pyproject.toml "$work/latest.in" --extra onnx --extra torch --extra dev --extra fleet --extra quantize \
  --upgrade --quiet \
  --python-version 3.11 -o "$work/latest.txt"
log "newer than dev/requirements.lock:"
python3 - "$ROOT/dev/requirements.lock" "$work/latest.txt" <<'PY'
import re, sys
def pins(path):
    return dict(re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s\\;]+)", open(path).read(), re.M))
locked, latest = pins(sys.argv[1]), pins(sys.argv[2])
for name in sorted(latest):
    if locked.get(name) != latest[name]:
        print(f"  {name}: {locked.get(name, '-')} -> {latest[name]}")
PY
"$py" -m venv "$work/venv"
"$UV" pip sync --quiet --python "$work/venv/bin/python" "$work/latest.txt"
"$UV" pip install --quiet --python "$work/venv/bin/python" --no-deps -e .
build_interfaces "$work/venv" "$work/build" >/dev/null
set +u  # the venv's and colcon's setup scripts read unset variables
# shellcheck disable=SC1091
source "$work/venv/bin/activate"
export AMENT_PREFIX_PATH=$work/venv
# shellcheck disable=SC1091
source "$work/build/install/setup.bash"
set -u
export PYTHONPATH=$ROOT
log "$(cd test && python -c 'from conftest import ros_available; print(ros_available() or "ROS 2 and the interfaces import")')"
python -m pytest -q -p no:cacheprovider "$@"
