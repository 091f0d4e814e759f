"""Bag replay and regression testing: run recordings, store golden runs, compare.

``records`` (one frame's outputs as compact JSON), ``compare`` (matching and drift)
and ``report`` are ROS-free and torch-free; ``messages`` builds the node's output
messages with the ``rosbags`` typestore (no rclpy); ``through_ros`` alone needs rclpy.
The command line lives in ``seg_perception.tools.regress``.
"""
