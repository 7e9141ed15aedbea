"""The control plane: job state machine, scheduling, the controller and its launcher."""
