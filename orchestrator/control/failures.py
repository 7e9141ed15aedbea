"""Which failures restart a job and which fail it, and how long a restart waits.

Why: a 57-day run on 2,048 ranks sees storage outages, throttling and timeouts on its checkpoint
bucket. Those are not bugs in the training code: failing the job for them throws the run away,
while restarting at once against a bucket that is still down only burns restarts. So an attempt's
error is classed from its text (errors cross Ray's process boundary as tracebacks):

- a refused checkpoint (its format cannot be loaded safely): fail, restarting would refuse it again;
- checkpoint storage (outage, timeout) and commit failures: restart from the last good checkpoint
  after a backoff that doubles with every restart (``backoff_s``);
- lost nodes or workers: restart at once (spares may be waiting);
- anything else is the training code's own error: fail (retrying a deterministic bug only burns
  device-hours).
"""

from __future__ import annotations

from orchestrator.lifecycle import FailureReason

BACKOFF_BASE_S = 10.0
BACKOFF_CAP_S = 600.0

REFUSED_MARKERS = ("CheckpointFormatError",)
COMMIT_MARKERS = ("CommitFailed",)
STORAGE_MARKERS = (
    "StorageError",
    "ObjectNotFound",
    "ReadTimeoutError",
    "ConnectTimeoutError",
    "EndpointConnectionError",
    "ConnectionClosedError",
    "SlowDown",
    "ServiceUnavailable",
)
INFRASTRUCTURE_MARKERS = (
    "ActorDiedError",
    "ActorUnavailableError",
    "NodeDiedError",
    "node died",
    "WorkerGroupStartupTimeoutError",
    "ray.exceptions.RayActorError",
    "OwnerDiedError",
    "Connection closed by peer",
    "Connection reset by peer",
    # Ray Train's worker-group error names no exception class when a worker's node went (seen in CI:
    # "the actor's node was terminated unexpectedly: health check failed due to missing too many heartbeats")
    "node was terminated unexpectedly",
    "missing too many heartbeats",
)

RESTART = frozenset({FailureReason.CHECKPOINT_STORAGE, FailureReason.CHECKPOINT_COMMIT, FailureReason.NODE_LOST})
BACKOFF = frozenset({FailureReason.CHECKPOINT_STORAGE, FailureReason.CHECKPOINT_COMMIT})


def classify(error_text: str) -> FailureReason:
    """The failure reason of an attempt that raised ``error_text`` (a traceback)."""
    for markers, reason in (
        (REFUSED_MARKERS, FailureReason.CHECKPOINT_REFUSED),
        (COMMIT_MARKERS, FailureReason.CHECKPOINT_COMMIT),
        (STORAGE_MARKERS, FailureReason.CHECKPOINT_STORAGE),
        (INFRASTRUCTURE_MARKERS, FailureReason.NODE_LOST),
    ):
        if any(marker in error_text for marker in markers):
            return reason
    return FailureReason.TRAINING_ERROR


def backoff_s(restarts: int) -> float:
    """How long restart number ``restarts`` (1, 2, ...) waits after a storage or commit failure."""
    return min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** max(0, restarts - 1))
