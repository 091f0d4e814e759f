"""The ROS 2 layer: the node, message conversion, markers, diagnostics, replay."""

import os

# Post-processing does many small matrix products next to the inference threads;
# a multi-threaded BLAS there oversubscribes the cores (measured under load: 80 ms
# instead of 4 ms for one large mask). Set before NumPy loads; users may override.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
