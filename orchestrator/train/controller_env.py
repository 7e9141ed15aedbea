"""A Ray Train controller callback: the controller records its runtime environment as it starts, so
that the next attempt's runner can ask for warm processes with exactly that environment
(``warm_control.py``). Its own module: it imports Ray Train, which only a run's runner needs."""

from __future__ import annotations

import logging

from ray.train.v2._internal.execution.callback import ControllerCallback

from orchestrator.train.warm_control import record_controller_env

log = logging.getLogger(__name__)


class RecordControllerEnv(ControllerCallback):
    """``after_controller_start`` runs in Ray Train's controller actor (Ray 2.60:
    ``train/v2/_internal/execution/controller/controller.py``; ``RunConfig.callbacks`` takes any
    ``RayTrainCallback``). A failure here costs the next restart its warm control processes, never
    the run."""

    def after_controller_start(self, train_run_context) -> None:
        try:
            record_controller_env(train_run_context.run_config.name)
        except Exception as exc:  # the GCS unreachable for a moment: the next restart starts cold
            log.warning("the Train controller's runtime environment was not recorded: %s", exc)
