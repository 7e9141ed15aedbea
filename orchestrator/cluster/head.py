"""Failures of the embedded cluster's head, for drills and tests: kill the GCS alone, or the whole
head (GCS, head raylet and everything on it: the controller actor, the job runners), and bring it
back the way a supervisor would (KubeRay restarts the head Pod; here the same command line again).

Only meaningful with GCS fault tolerance (`orch up --ha`): without it a new GCS knows nothing of
the running cluster and the worker raylets are told to exit. The head's processes are those of
its recorded Unix sessions (``EmbeddedCluster.processes``); a restarted GCS gets a session of its own,
recorded as the head's, so `orch down` still stops it.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass

import psutil

from orchestrator.cluster.embedded import ClusterError, ClusterInfo, EmbeddedCluster, Session, _kill


@dataclass(frozen=True)
class ProcessImage:
    """What is needed to start a killed process again: its command line, environment and folder."""

    cmdline: list[str]
    environ: dict[str, str]
    cwd: str


def _require_ha(cluster: EmbeddedCluster) -> ClusterInfo:
    info = cluster.running()
    if info is None:
        raise ClusterError("the embedded cluster is not running; start it with 'orch up --ha'")
    if not info.redis_port:
        raise ClusterError("the embedded cluster runs without GCS fault tolerance; restart it with 'orch up --ha'")
    return info


def head_processes(info: ClusterInfo) -> list[psutil.Process]:
    return EmbeddedCluster.processes(info, [s for s in info.sessions if s.node == "head"])


def kill_gcs(cluster: EmbeddedCluster) -> ProcessImage:
    """SIGKILL the GCS server; what it takes to start it again."""
    info = _require_ha(cluster)
    for proc in head_processes(info):
        try:
            if proc.name().startswith("gcs_server"):
                image = ProcessImage(proc.cmdline(), proc.environ(), proc.cwd())
                _kill([proc])
                return image
        except psutil.NoSuchProcess:
            continue
    raise ClusterError("no GCS process found among the embedded cluster's head processes")


def restart_gcs(cluster: EmbeddedCluster, image: ProcessImage) -> int:
    """Start the GCS again from its image (it reloads the cluster's tables from Redis), in a new
    session recorded as the head's; its pid."""
    info = cluster.load()
    started = time.time()
    proc = subprocess.Popen(
        image.cmdline,
        env=image.environ,
        cwd=image.cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    info.sessions.append(Session(proc.pid, started, "head"))
    cluster.save(info)
    return proc.pid


def kill_head(cluster: EmbeddedCluster) -> int:
    """SIGKILL every process of the head (GCS, head raylet, dashboard, the actors on the head) and
    none of the worker nodes'; how many were killed."""
    victims = head_processes(_require_ha(cluster))
    if not victims:
        raise ClusterError("the embedded cluster's head has no running process")
    return _kill(victims)
