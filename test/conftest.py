"""Shared fixtures: the real recording, a known-answer model, ROS isolation."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
HSR_MCAP = SHARED_DATA / "hsr_people" / "hsr_people_mcap"
HSR_SQLITE = SHARED_DATA / "hsr_people" / "hsr_people_sqlite3"
HSR_IMAGE_TOPIC = "/hero/head_rgbd_sensor/rgb/image_raw"

_domain_ids = itertools.count()


def ros_available() -> str | None:
    """None if rclpy and the built interfaces import, else the reason they do not."""
    try:
        import rclpy  # noqa: F401

        from seg_perception.msg import InstanceArray  # noqa: F401
    except Exception as exc:  # ImportError, or a missing shared library
        return f"ROS 2 / built interfaces not available ({exc}); run `make test`"
    return None


@pytest.fixture(scope="session")
def hsr_bag() -> Path:
    if not HSR_MCAP.exists():
        pytest.skip(f"real recording not present at {HSR_MCAP} (../shared is absent)")
    return HSR_MCAP


@pytest.fixture(scope="session")
def known_answer_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch", reason="writing the known-answer ONNX graph needs torch")
    from seg_perception.models.known_answer import write_known_answer_model

    return write_known_answer_model(tmp_path_factory.mktemp("known_answer"))


@pytest.fixture(scope="module")
def ros_domain() -> str:
    """A ROS_DOMAIN_ID of this test module's own, so parallel runs do not see each other."""
    reason = ros_available()
    if reason:
        pytest.skip(reason)
    domain = str(1 + (os.getpid() * 7 + next(_domain_ids)) % 200)
    old = os.environ.get("ROS_DOMAIN_ID")
    os.environ["ROS_DOMAIN_ID"] = domain
    yield domain
    if old is None:
        os.environ.pop("ROS_DOMAIN_ID", None)
    else:
        os.environ["ROS_DOMAIN_ID"] = old


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test that talks ROS (it takes a ROS domain) is marked ``ros``: the Jazzy leg runs ``-m ros``."""
    for item in items:
        if "ros_domain" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ros)
