"""How a process reaches the head's controller actor by name: the runner wakes it when an attempt ends,
the CLI finds it (``control/service.py`` defines the actor). A leaf of ``control/``, so that the runner
reaches the controller without importing the controller's modules."""

from __future__ import annotations

import ray

CONTROLLER_NAME = "orch-controller"
NAMESPACE = "orch"


def wake_controller() -> None:
    """Ask the head's controller, if there is one, for a pass now (``ControllerLoop.wake``); never waits
    and never raises (a RayJob's driver runs without one, and the next pass comes within the interval)."""
    try:
        ray.get_actor(CONTROLLER_NAME, namespace=NAMESPACE).wake.remote()
    except Exception:  # noqa: BLE001 - absent, or restarting: its next pass reads the outcome anyway
        pass
