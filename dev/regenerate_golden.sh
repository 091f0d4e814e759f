#!/usr/bin/env bash
# Regenerate the committed golden run of the shipped model (the `make golden` target).
#
# Replays the committed synthetic recording (test/data/synthetic_recording, the input of
# the golden-set test in test/regression/test_regress.py; another with RECORDING=path) through the
# shipped model on the CPU ONNX Runtime backend, with config/seg_perception.yaml and the
# recording's COCO ground truth, and replaces test/golden/seg_perception_default only
# after a complete run. Run it after an intended change of the model or the default
# parameters, read the printed comparison with the old golden run, and commit the result.
#
#   MODEL=path/to/model.onnx GOLDEN=path/to/golden RECORDING=path/to/bag dev/regenerate_golden.sh
set -eo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck disable=SC1091
source dev/env.sh   # before `set -u`: colcon's setup scripts read unset variables
set -u
MODEL=${MODEL:-models/seg_perception_default.onnx}
GOLDEN=${GOLDEN:-test/golden/seg_perception_default}
RECORDING=${RECORDING:-test/data/synthetic_recording}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

annotations=()
if [ -f "$RECORDING/ground_truth.json" ]; then annotations=(--annotations "$RECORDING/ground_truth.json"); fi
seg-perception regress "$RECORDING" --golden "$GOLDEN" --model "$MODEL" --backend onnxruntime -p device=cpu \
  "${annotations[@]}" --out "$work/out" --update-golden --no-progress
echo "review, then commit $GOLDEN"
