"""Fixtures shared by the integration tests that need a running embedded cluster."""

from __future__ import annotations

import os

import pytest

from orchestrator.control.client import ControlPlane


@pytest.fixture(scope="module")
def plane(tmp_path_factory):
    """An embedded cluster of real raylets under a private ORCH_HOME, one per test module."""
    home = tmp_path_factory.mktemp("orch_home")
    os.environ["ORCH_HOME"] = str(home)
    # no warm pool (train/warm_pool.py, tested in test_warm_pool.py): its ten processes' imports would
    # compete with the module's first jobs on CI's 2 cores; restarts still use their own warm processes
    os.environ["ORCH_WARM_POOL"] = "0"
    plane = ControlPlane(home=home)
    plane.connect(start=True)
    yield plane
    import ray

    ray.shutdown()
    plane.cluster.down()
