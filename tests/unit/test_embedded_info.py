"""cluster.json has two writers: the controller actor's provider (adds and retires hot spares) and
whoever restarts or kills a node. A retirement waits for the retired raylet to go between reading the
file and writing it; a node restarted meanwhile must keep the session it recorded, or its processes
become unknown to `kill_node` and `orch down` (found by bench/bench_recovery.py: "node node-2 has no
running raylet" right after node-2 had been restarted while the controller retired a spare)."""

from __future__ import annotations

import socket
import threading

import pytest

from orchestrator.cluster.embedded import ClusterInfo, EmbeddedCluster, Session, VirtualNode


@pytest.fixture
def gcs():
    """A listening socket where the cluster's GCS would be: ``running()`` connects to it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    yield server.getsockname()[1]
    server.close()


def test_a_retirement_keeps_a_session_recorded_while_it_waited(tmp_path, gcs, monkeypatch):
    cluster = EmbeddedCluster(tmp_path)
    info = ClusterInfo(address=f"127.0.0.1:{gcs}", dashboard_port=1, temp_dir=str(tmp_path / "ray"), token_path="t")
    info.nodes = [VirtualNode("node-2", "spot", "spot", 2, 1, 2), VirtualNode("node-4", "spare", "spare", 2, 3, 4)]
    info.sessions = [Session(111, 1.0, "node-2"), Session(222, 2.0, "node-4")]
    cluster.save(info)
    waiting, restarted = threading.Event(), threading.Event()

    def retired_raylet_still_going(found, sessions=None):  # the retirement's wait for node-4's processes
        if sessions and sessions[0].node == "node-4" and not restarted.is_set():
            waiting.set()
            restarted.wait(10)
        return []

    monkeypatch.setattr(EmbeddedCluster, "processes", staticmethod(retired_raylet_still_going))
    retire = threading.Thread(target=cluster.remove_node, args=("node-4",), kwargs={"wait_s": 10.0})
    retire.start()
    assert waiting.wait(10)
    current = cluster.load()  # node-2 restarted now: its `ray start` recorded its new session
    current.sessions.append(Session(333, 3.0, "node-2"))
    cluster.save(current)
    restarted.set()
    retire.join(10)
    after = cluster.load()
    assert [n.name for n in after.nodes] == ["node-2"] and after.retired_upto == 4
    assert [(s.sid, s.node) for s in after.sessions] == [(111, "node-2"), (333, "node-2")]


def test_two_ports_handed_out_in_a_row_differ_even_when_the_os_repeats_one(monkeypatch):
    """The OS may give the same ephemeral port to two binds in a row (the first socket closed); the
    raylet's node manager and object manager then collided and the cluster failed to start. The
    allocator skips a port it already handed out."""
    from orchestrator.cluster import embedded

    given = iter([47001, 47001, 47001, 47002])

    class RepeatingSocket:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def bind(self, address):
            self.port = next(given)

        def getsockname(self):
            return ("127.0.0.1", self.port)

    monkeypatch.setattr(embedded, "_HANDED_OUT", set())
    monkeypatch.setattr(embedded.socket, "socket", RepeatingSocket)
    assert [embedded._free_port(), embedded._free_port()] == [47001, 47002]


def test_a_process_that_has_exited_is_not_running_while_it_waits_to_be_collected(tmp_path, gcs):
    """A killed keeper whose parent is gone waits as a zombie until PID 1 collects it (about 1.6 s later
    in this sandbox; longer under load). Counted as running, it kept the next connecting CLI from
    starting a keeper (the CI failure of test_warm_pool's keeper test). Here the zombie's parent is this
    process, which collects it only at the end."""
    import subprocess
    import time

    cluster = EmbeddedCluster(tmp_path)
    info = ClusterInfo(address=f"127.0.0.1:{gcs}", dashboard_port=1, temp_dir=str(tmp_path / "ray"), token_path="t")
    started = time.time()
    keeper = subprocess.Popen(["sleep", "60"], start_new_session=True)
    info.sessions = [Session(keeper.pid, started, "keeper")]
    cluster.save(info)
    try:
        assert cluster.process_running("keeper")
        assert [p.pid for p in EmbeddedCluster.processes(info)] == [keeper.pid]
        keeper.kill()
        deadline = time.time() + 10
        while open(f"/proc/{keeper.pid}/stat").read().split(") ")[1][0] != "Z":  # not collected: a zombie
            assert time.time() < deadline
            time.sleep(0.05)
        assert not cluster.process_running("keeper")
        assert EmbeddedCluster.processes(info) == []
    finally:
        keeper.kill()
        keeper.wait()
