"""`orch up`/`orch down` own their processes by Unix session: `down` leaves none behind (Ray's agents
rename themselves to ``ray::DashboardAgent``/``ray::RuntimeEnvAgent`` and used to outlive it,
re-parented to init), removes Ray's temporary folder, and never kills a process it did not start even
when that process's command line names the cluster's port (an ``ssh -L ...:PORT`` used to be killed)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

from orchestrator.cluster.embedded import EmbeddedCluster

pytestmark = pytest.mark.slow


def _tree(pids: list[int]) -> set[psutil.Process]:
    found = set()
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            found |= {proc, *proc.children(recursive=True)}
        except psutil.NoSuchProcess:
            pass
    return found


def test_down_leaves_no_process_and_no_temp_folder_and_spares_lookalikes():
    home = Path(tempfile.mkdtemp(prefix="oh", dir="/tmp"))  # short: Ray's folder fits under ORCH_HOME
    cluster = EmbeddedCluster(home)
    decoy = None
    try:
        info = cluster.up(layout="local-spot:spot:1", devices_per_node=1)
        assert Path(info.temp_dir) == home.resolve() / "ray" and Path(info.temp_dir).is_dir()
        assert oct(home.stat().st_mode & 0o777) == "0o700"
        # processes an independent way: everything below the raylets and the GCS, found by parent links
        roots = [
            p.pid
            for p in psutil.process_iter(["cmdline"])
            if any(
                info.temp_dir in part
                or f"--gcs-address={info.address}" in part
                or f"--gcs_server_port={info.gcs_port}" in part
                for part in (p.info["cmdline"] or [])
            )
        ]
        # a process of the cluster's own beside the raylets (the controller's keeper runs so)
        own = cluster.start_process("keeper", [sys.executable, "-c", "import time; time.sleep(120)"])
        assert cluster.process_running("keeper")
        again = cluster.start_process("keeper", [sys.executable, "-c", "import time; time.sleep(120)"])
        assert again == own  # it runs: not started a second time (two `orch` commands at once)
        tree = _tree(roots) | set(cluster.processes(info)) | {psutil.Process(own.sid)}
        names = {" ".join(p.cmdline())[:40] for p in tree if p.is_running()}
        assert any(n.startswith("ray::DashboardAgent") for n in names), names  # the renamed agents are there
        assert any(n.startswith("ray::RuntimeEnvAgent") for n in names), names
        assert len(tree) >= 6
        # a process orch did not start that names the cluster's port and folder on its command line
        decoy = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import time; time.sleep(120)",
                f"ssh -L 9999:127.0.0.1:{info.gcs_port}",
                info.temp_dir,
            ]
        )
        stopped = cluster.down()
        assert stopped >= len(tree) - 1
        alive = [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert alive == [], [(p.pid, p.cmdline()[:1]) for p in alive]
        assert cluster.processes(info) == []
        assert decoy.poll() is None  # still running: down killed only what orch started
        assert not Path(info.temp_dir).exists() and not (home / "cluster.json").exists()
        digest = __import__("hashlib").sha1(str(home.resolve()).encode()).hexdigest()[:10]
        digest_dir = Path("/tmp") / f"orch-ray-{digest}"
        assert not digest_dir.exists()  # nothing of this cluster outside ORCH_HOME
    finally:
        if decoy is not None:
            decoy.kill()
            decoy.wait()
        cluster.down()
        shutil.rmtree(home, ignore_errors=True)


def test_a_long_orch_home_gets_a_short_temp_folder_that_down_removes(tmp_path):
    home = tmp_path / ("x" * 60)
    cluster = EmbeddedCluster(home)
    temp = cluster.temp_dir()
    assert temp.parent == Path("/tmp") and temp.name.startswith("orch-ray-") and len(str(temp)) < 40
    os.makedirs(temp, exist_ok=True)
    (home).mkdir(parents=True)
    from orchestrator.cluster.embedded import ClusterInfo

    cluster.save(ClusterInfo(address="127.0.0.1:1", dashboard_port=2, temp_dir=str(temp), token_path="t"))
    cluster.down()
    assert not temp.exists()


def test_a_raylet_that_registers_after_rays_30_s_is_kept(tmp_path):
    """`ray start` gives up on a worker raylet that has not registered within a hard-coded 30 s
    (ray/_private/node.py, ``raylet_start_wait_time_s``) but leaves it running; orch then asks the GCS
    itself (Ray's ``get_node_with_retry``) before calling the start failed. Here: the check finds a
    registered raylet by its node manager port, and finds nothing where no raylet listens."""
    from dataclasses import replace

    cluster = EmbeddedCluster(tmp_path / "home")
    info = cluster.up("local-on-demand:on-demand:1")
    try:
        env = {**os.environ, **cluster.env(info)}
        (node,) = info.nodes
        assert cluster._registers_late(info, node, env, wait_s=20)
        assert not cluster._registers_late(info, replace(node, node_manager_port=1), env, wait_s=5)
    finally:
        cluster.down()
