"""``seg-perception bench``: backends, the node end to end, peers and post-processing.

Every comparison runs its contenders in one process run, interleaved, on the same
frames and thread count, because these machines are shared and noisy: only
ratios measured side by side mean anything.
"""

import os

# As in the node (seg_perception/ros/__init__.py): single-threaded BLAS for post-processing.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
