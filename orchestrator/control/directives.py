"""What a job's runner may tell its training workers after each step."""

CONTINUE, STOP, CHECKPOINT_STOP = "continue", "stop", "checkpoint_stop"
DIRECTIVES = (CONTINUE, STOP, CHECKPOINT_STOP)
