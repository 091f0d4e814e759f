#!/usr/bin/env bash
# The ROS 2 Jazzy leg (`make test-jazzy`): Jazzy's wheels (rclpy 7.1) in .venv-jazzy from
# dev/requirements-jazzy.lock, our interfaces built by colcon against them, and every test
# that talks ROS (nodes, DDS, lifecycle, parameters, regress through ROS, demo: the `ros`
# marker, given to every test that uses the ros_domain fixture), but the `slow` benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
./dev/setup.sh jazzy
set +u  # colcon's setup scripts read unset variables
# shellcheck disable=SC1091
source dev/env.sh jazzy
set -u
export SEG_PERCEPTION_INSTALL=$PWD/build/jazzy/install  # the installed-overlay tests use Jazzy's
echo "[jazzy] rclpy $(python -c 'from importlib.metadata import version; print(version("ros-jazzy-rclpy"))')"
# Known Jazzy difference, left out here and tracked: in the lockstep RGB-D demo, Jazzy's
# Fast DDS 2.14 delivers some 1.2 MB depth images more than 0.5 s late or not at all (3 of 6
# frames with LARGE_DATA, 1 of 6 with SHM only, all lost with the default UDP transports;
# Kilted's Fast DDS delivers all 6). The node then publishes those frames without 3D and
# says so in a warning. The demo's other tests run.
# The `slow` ones (whole bench and overload runs, a minute each) measure speed, not the ROS API;
# the Kilted leg runs them.
python -m pytest -q -m "ros and not slow" -k "not test_demo_on_an_rgbd_recording_records_3d_boxes_and_keeps_track_ids" "$@"
