#!/usr/bin/env bash
# `make lock`: re-pin every development/CI environment to the newest releases the inputs
# admit, with hashes. Run it on purpose (a monthly refresh), then `make test test-jazzy
# test-humble` and commit the changed dev/*.lock files together with whatever the new
# releases needed. `make lock KEEP=1` keeps every existing pin and only adds what a new
# dependency needs. Set-up never resolves: it installs the locks.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v uv >/dev/null || { echo "error: uv is needed to lock (python3 -m pip install uv)" >&2; exit 2; }
UPGRADE=(--upgrade)
[ -z "${KEEP:-}" ] || UPGRADE=()
compile() {  # compile OUT PYTHON INPUTS...
  local out=$1 py=$2; shift 2
  echo "[lock] $out"
  uv pip compile "$@" --python-version "$py" --python-platform x86_64-manylinux_2_28 \
    --generate-hashes "${UPGRADE[@]}" --quiet --custom-compile-command "make lock" -o "$out"
}
EXTRAS=(--extra onnx --extra torch --extra dev)
# The Kilted leg runs every test (Ray and quantization too); the Jazzy leg runs the ROS tests.
compile dev/requirements.lock 3.11 pyproject.toml dev/requirements.in "${EXTRAS[@]}" --extra fleet --extra quantize
compile dev/requirements-jazzy.lock 3.11 pyproject.toml dev/requirements-jazzy.in "${EXTRAS[@]}"
compile dev/requirements-humble-core.lock 3.10 dev/requirements-humble-core.in
compile dev/requirements-humble-onnx.lock 3.10 dev/requirements-humble-onnx.in
compile dev/requirements-bootstrap.lock 3.11 dev/requirements-bootstrap.in
