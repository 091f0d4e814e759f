"""Where the package's own files are: config, models, launch files, message definitions.

Two layouts exist. Run from a checkout (the ``seg_perception`` Python package beside
``package.xml``), the files are the checkout's own, so an edit takes effect without a
rebuild. Installed by ``colcon build`` (as on a robot), the Python package lies in
``install/<pkg>/lib/python3.X/site-packages`` and its files in the package's share
directory, found through the ament index (``ament_index_python``), never relative to
the Python files. Every tool asks here instead of building paths from ``__file__``.
No ROS needed: without ament_index_python (a pip install) only the checkout is searched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

PACKAGE = "seg_perception"
PARAMS_FILE = "config/seg_perception.yaml"


class ResourceError(FileNotFoundError):
    """A file of the package is neither in the checkout nor in the installed share directory."""


def source_tree() -> Path | None:
    """The checkout this code runs from (the folder holding ``package.xml``), or None when installed."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "package.xml").is_file() else None


def share_dir() -> Path | None:
    """The installed share directory (``install/.../share/seg_perception``), or None when not installed."""
    try:
        from ament_index_python.packages import get_package_share_directory
    except ImportError:
        return None
    try:
        return Path(get_package_share_directory(PACKAGE))
    except Exception:  # PackageNotFoundError, or no AMENT_PREFIX_PATH at all
        return None


def package_root() -> Path:
    """The folder whose ``config/``, ``models/``, ``launch/`` and ``msg/`` this code uses."""
    root = source_tree() or share_dir()
    if root is None:
        raise ResourceError(f"cannot find the {PACKAGE} package files: not run from a checkout, and the package is "
                            "not in the ament index (source install/setup.bash of the colcon build)")
    return root


def resource(relative: str | Path) -> Path:
    """The package file ``relative`` (e.g. ``config/seg_perception.yaml``): the checkout's when running
    from one, else the installed share directory's; ResourceError naming both places when absent."""
    candidates = [root / relative for root in (source_tree(), share_dir()) if root is not None]
    for path in candidates:
        if path.exists():
            return path
    raise ResourceError(f"{PACKAGE} file {relative} not found (looked in: "
                        f"{', '.join(str(c) for c in candidates) or 'no checkout and no installed share directory'})")


def default_params_file() -> Path:
    """The node's parameter file as shipped."""
    return resource(PARAMS_FILE)


def sample_recording() -> Path | None:
    """The real recording the tools default to (``../shared/data/hsr_people`` beside a checkout), or None."""
    root = source_tree()
    path = None if root is None else root.parent / "shared" / "data" / "hsr_people" / "hsr_people_mcap"
    return path if path is not None and path.exists() else None


def model_load_problem(values: Mapping[str, Any], exc: BaseException) -> str:
    """The ERROR line of a node whose model does not load: the path, the reason and the fix."""
    path = values.get("model_path") or "(the shipped model)"
    return (f"cannot load the model {path} (backend {values.get('backend', 'auto')}): {exc}. Fix: set model_path to "
            "an exported model (.onnx with its .json beside it, a TensorRT .engine, or a .pth checkpoint), e.g. "
            "model_path:=/abs/path/model.onnx on the launch command, then restart the node or configure it again")
