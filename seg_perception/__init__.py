"""seg_perception: instance segmentation and keypoints for ROS 2 robots.

Layers (imports point one way, top to bottom):
``core`` (NumPy/OpenCV) <- ``models`` (torch) / ``runtime`` (backends) <- ``ros`` (rclpy) <- ``tools``.
"""

import pkgutil as _pkgutil

# The generated message modules (seg_perception.msg) are installed by colcon into
# the install tree; when this source tree is imported first (development,
# `pip install -e .`), extend the package path so both halves import as one.
__path__ = _pkgutil.extend_path(__path__, __name__)

__version__ = "0.1.0"
