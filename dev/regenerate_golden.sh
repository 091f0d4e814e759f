#!/usr/bin/env bash
# Regenerate the committed golden run of the shipped model (the `make golden` target).
#
# Replays a synthetic recording (generated with the same arguments as the golden-set
# test in test/test_regress.py, or $SEG_PERCEPTION_SYNTHETIC_RECORDING) through the
# shipped model on the CPU ONNX Runtime backend, with config/seg_perception.yaml and the
# recording's COCO ground truth, and replaces test/golden/seg_perception_default only
# after a complete run. Run it after an intended change of the model or the default
# parameters, read the printed comparison with the old golden run, and commit the result.
#
#   MODEL=path/to/model.onnx GOLDEN=path/to/golden dev/regenerate_golden.sh   # other paths
set -eo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck disable=SC1091
source dev/env.sh   # before `set -u`: colcon's setup scripts read unset variables
set -u
MODEL=${MODEL:-models/seg_perception_default.onnx}
GOLDEN=${GOLDEN:-test/golden/seg_perception_default}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
recording=${SEG_PERCEPTION_SYNTHETIC_RECORDING:-$work/synthetic_recording}
if [ ! -e "$recording" ]; then
  seg-perception generate-recording "$recording" -n 12 --seed 0 --quiet   # = SYNTHETIC_RECORDING_ARGS
fi
annotations=()
if [ -f "$recording/ground_truth.json" ]; then annotations=(--annotations "$recording/ground_truth.json"); fi
seg-perception regress "$recording" --golden "$GOLDEN" --model "$MODEL" --backend onnxruntime -p device=cpu \
  "${annotations[@]}" --out "$work/out" --update-golden --no-progress
echo "review, then commit $GOLDEN"
