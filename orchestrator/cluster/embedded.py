"""The embedded Ray cluster: several real raylets on this machine, each a virtual node.

A head raylet (GCS, dashboard, the controller) plus worker raylets that carry devices (CPU worker
slots, resource ``orch_device``) and node labels (``orch-node``, ``orch-pool``, ``orch-pool-kind``).
Killing a raylet is a real node loss; starting one with the same labels is a real replacement.
Token authentication is on (the token lives in ORCH_HOME, mode 0600). Ray advertises the machine's
own interface address even when given 127.0.0.1 (``ray._private.services.resolve_ip_for_localhost``),
so the raylets talk over that address; no traffic leaves the machine. ``cluster.json`` under ORCH_HOME
records the address and the nodes, so every command reuses the running cluster.

Processes are owned by session, never matched by command line (Ray's agents rename themselves to
``ray::DashboardAgent`` and the like, and an unrelated ``ssh -L ...:PORT`` matches a port): each
``ray start`` runs as the leader of a new Unix session, which every daemon, agent and worker it starts
inherits. ``cluster.json`` records each session's id and start time; stopping a node or the cluster
kills exactly the processes of its sessions that started after it (a recycled id cannot match).
Ray's temporary folder lives under ORCH_HOME (``ray/``) and is removed by ``down``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import psutil

from orchestrator.cluster.auth import cluster_token_path, token_path
from orchestrator.cluster.redis_store import RedisServer
from orchestrator.errors import OrchError
from orchestrator.private import private_dir

# Ray starts worker processes at nice 15 so that its own daemons win any contention. On a training
# node the workers are the workload: run them at normal priority (measured in bench/RESULTS.md).
# The GCS declares a raylet dead after ``threshold`` failed health checks, one every ``period`` once the
# last has answered or timed out (ray-project/ray, src/ray/gcs/gcs_health_check_manager.cc at 2a48f19;
# Ray 2.60 here behaves so). A killed raylet refuses the check at once, so it is declared dead in about
# period x threshold: 0.75 s here (0.71 s in a probe's GCS log) instead of Ray's ~15 s, as quickly as a
# cloud provider's signal would tell. The period sets how soon a dead raylet is found, not how readily a
# live one is taken for dead, which the timeout and threshold decide: a raylet that is alive but slow
# (training shares the cores with it) has 5 s to answer each check, so it would have to stall for 15 s to
# be declared dead by mistake; at 1 s per check a busy head raylet could be, and a fresh-clone CI run once
# lost a job's runner with "Owner's node has crashed" (cause not proven).
# Ray Train's controller polls its workers every 0.5 s instead of 2 s (RAY_TRAIN_HEALTH_CHECK_INTERVAL_S,
# ray/train/v2/_internal/constants.py): a worker group that lost a node is reported that much sooner.
EMBEDDED_RAY_ENV = {
    "RAY_worker_niceness": "0",
    "RAY_health_check_period_ms": "250",
    "RAY_health_check_timeout_ms": "5000",
    "RAY_health_check_failure_threshold": "3",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
}
# The head raylet starts this many worker processes at once. Ray's default is the node's CPUs (at least
# 1; ``ray/_private/services.py``), 1 here, and a raylet drops a prestart beyond it ("Worker not started,
# exceeding maximum_startup_concurrency", src/ray/raylet/worker_pool.cc): of the warm control processes a
# job asks its head for (train/warm_control.py: a runner and five Ray Train actors) one started, and a
# restart's own new processes on the head started one after another.
HEAD_RAY_ENV = {"RAY_worker_maximum_startup_concurrency": "6"}
HOST = "127.0.0.1"
CREATE_TIME_SLACK_S = 2.0  # processes(): how much earlier than its session a process may read as started
KEEPER = "keeper"  # the session of the driver that owns orch's controller actor (control/keeper.py)
NAMESPACE = "orch"
DEFAULT_LAYOUT = "local-on-demand:on-demand:1,local-spot:spot:1,local-spare:spare:1"
OBJECT_STORE_BYTES = 150_000_000
# Ray puts its Unix sockets at <temp>/session_<date>_<time>_<usec>_<pid>/sockets/plasma_store (about
# 70 characters after <temp>); a socket path may hold 107. A longer ORCH_HOME gets a short folder in
# the system temp directory instead, removed by 'down' like the one under ORCH_HOME.
MAX_TEMP_DIR_CHARS = 36


# `ray start`'s words when its raylet did not register within Ray's hard-coded 30 s (ray/_private/node.py)
RAYLET_TIMEOUT = "The current node timed out during startup"
LATE_REGISTRATION_S = 90.0  # how much longer orch waits for such a raylet before giving up


class ClusterError(OrchError):
    """The embedded cluster could not be started, reached or changed."""


@dataclass
class VirtualNode:
    name: str
    pool: str
    kind: str  # on-demand | spot | spare
    devices: int
    node_manager_port: int
    object_manager_port: int

    def labels(self) -> str:
        return f"orch-node={self.name},orch-pool={self.pool},orch-pool-kind={self.kind}"


@dataclass
class Session:
    """One ``ray start``, or another process of the cluster's own: the Unix session it leads, when it
    started, and which node it is ('head', a node's name, or ``KEEPER``)."""

    sid: int
    started: float
    node: str


@dataclass
class ClusterInfo:
    address: str
    dashboard_port: int
    temp_dir: str
    token_path: str
    nodes: list[VirtualNode] = field(default_factory=list)
    sessions: list[Session] = field(default_factory=list)
    redis_port: int | None = None  # `orch up --ha`: the GCS's external storage (GCS fault tolerance)
    storage_namespace: str | None = None  # RAY_external_storage_namespace: this cluster's keys in Redis
    retired_upto: int = 0  # the highest node number retired: new nodes are numbered after it

    @property
    def gcs_port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    def node(self, name: str) -> VirtualNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise ClusterError(f"no node '{name}' in the embedded cluster; see 'orch nodes list'")


def parse_layout(layout: str, devices: int) -> list[tuple[str, str, int]]:
    """``pool:kind:count,...`` -> [(pool, kind, devices)] one entry per node."""
    nodes = []
    for part in filter(None, (p.strip() for p in layout.split(","))):
        try:
            pool, kind, count = part.split(":")
            count_int = int(count)
        except ValueError:
            raise ClusterError(f"--layout entry '{part}': expected pool:kind:count, e.g. local-spot:spot:1") from None
        if kind not in ("on-demand", "spot", "spare"):
            raise ClusterError(f"--layout entry '{part}': kind must be on-demand, spot or spare")
        nodes += [(pool, kind, devices)] * count_int
    if not nodes:
        raise ClusterError("--layout names no nodes")
    return nodes


_HANDED_OUT: set[int] = set()  # every port _free_port returned in this process


def _free_port() -> int:
    """A port free now and never handed out before by this process. The OS may give the same ephemeral
    port to two binds in a row once the first socket is closed, and a raylet whose node manager and
    object manager got the same port fails to start ("Ray component node_manager is trying to use a
    port number 41101 that is used by other components", seen starting the recovery benchmark)."""
    while True:
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class EmbeddedCluster:
    def __init__(self, home: Path):
        self.home = Path(home)
        self.info_path = self.home / "cluster.json"

    # ------------------------------------------------------------------ discovery

    def load(self) -> ClusterInfo | None:
        if not self.info_path.exists():
            return None
        data = json.loads(self.info_path.read_text())
        data["nodes"] = [VirtualNode(**n) for n in data["nodes"]]
        data["sessions"] = [Session(**s) for s in data.get("sessions", [])]
        return ClusterInfo(**data)

    def save(self, info: ClusterInfo) -> None:
        private_dir(self.home)
        _write_atomic(self.info_path, json.dumps(asdict(info), indent=2))

    @contextmanager
    def _changing(self) -> Iterator[ClusterInfo]:
        """Read, change and write ``cluster.json`` under an exclusive lock.

        Two processes change it: the controller actor (its provider adds and retires hot spares) and
        whoever restarts or kills a node (`orch nodes preempt`, the tests, the benchmarks). Without the
        lock, a writer holding an older copy (``remove_node`` waits up to 10 s for a retired raylet
        between its read and its write) dropped the session another had just recorded: the restarted
        node's processes were then unknown to ``kill_node`` and ``down``."""
        private_dir(self.home)
        with os.fdopen(os.open(self.home / "cluster.json.lock", os.O_RDWR | os.O_CREAT, 0o600), "r+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                info = self.load()
                if info is None:
                    raise ClusterError("no embedded cluster is recorded; start one with 'orch up'")
                yield info
                self.save(info)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def running(self) -> ClusterInfo | None:
        info = self.load()
        if info is None:
            return None
        try:
            with socket.create_connection((HOST, info.gcs_port), timeout=1):
                return info
        except OSError:
            return None

    def env(self, info: ClusterInfo | None = None) -> dict[str, str]:
        """Environment every process of this cluster (and every client of it) needs."""
        token = info.token_path if info else str(token_path(self.home))
        return {
            **EMBEDDED_RAY_ENV,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": token,
            "DS_ACCELERATOR": os.environ.get("DS_ACCELERATOR", "cpu"),
        }

    # ------------------------------------------------------------------ lifecycle

    def up(self, layout: str = DEFAULT_LAYOUT, devices_per_node: int = 2, ha: bool = False) -> ClusterInfo:
        """Start the cluster unless it runs; return its description. ``ha``: back the GCS with a
        real Redis (Ray's GCS fault tolerance), so the GCS or the whole head can be restarted
        while the worker raylets, their workers and actors carry on."""
        info = self.running()
        if info is not None:
            return info
        self._cleanup_stale()
        private_dir(self.home)
        token = cluster_token_path(self.home)
        info = ClusterInfo(
            address=f"{HOST}:{_free_port()}",
            dashboard_port=_free_port(),
            temp_dir=str(self.temp_dir()),
            token_path=str(token),
        )
        for i, (pool, kind, devices) in enumerate(parse_layout(layout, devices_per_node), start=1):
            info.nodes.append(VirtualNode(f"node-{i}", pool, kind, devices, _free_port(), _free_port()))
        if ha:
            digest = hashlib.sha1(str(self.home.resolve()).encode()).hexdigest()[:10]
            info.redis_port, info.storage_namespace = _free_port(), f"orch-{digest}"
        self.save(info)  # first, so 'orch down' can clean up a half-started cluster
        if ha:
            RedisServer(self.home).start(info.redis_port)
        self._ray_start(info, head=True)
        for node in info.nodes:  # one at a time: each 'ray start' waits for its node by IP, all share 127.0.0.1
            self._ray_start(info, node=node)
        return info

    def temp_dir(self) -> Path:
        """Ray's temporary folder: ``ORCH_HOME/ray`` when its socket paths fit, else a short private one."""
        inside = self.home.resolve() / "ray"
        if len(str(inside)) <= MAX_TEMP_DIR_CHARS:
            return inside
        digest = hashlib.sha1(str(self.home.resolve()).encode()).hexdigest()[:10]
        return Path("/tmp") / f"orch-ray-{digest}"

    def _ray_binary(self) -> str:
        return str(Path(sys.executable).with_name("ray"))

    def _ray_start(self, info: ClusterInfo, head: bool = False, node: VirtualNode | None = None) -> None:
        common = ["--disable-usage-stats"]
        if head:
            args = [
                "--head",
                "--port",
                str(info.gcs_port),
                "--num-cpus",
                "1",
                "--resources",
                '{"orch_head": 1}',
                "--labels",
                "orch-node=head,orch-pool=control,orch-pool-kind=control",
                "--temp-dir",
                info.temp_dir,
                "--include-dashboard",
                "true",
                "--dashboard-host",
                HOST,
                "--dashboard-port",
                str(info.dashboard_port),
                "--object-store-memory",
                str(OBJECT_STORE_BYTES),
            ]
            args += self._gcs_storage_args(info)
        else:
            args = [
                "--address",
                info.address,
                "--num-cpus",
                str(node.devices),
                "--resources",
                json.dumps({"orch_device": node.devices}),
                "--labels",
                node.labels(),
                "--node-manager-port",
                str(node.node_manager_port),
                "--object-manager-port",
                str(node.object_manager_port),
                "--object-store-memory",
                str(OBJECT_STORE_BYTES),
            ]
        private_dir(Path(info.temp_dir))
        started = time.time()
        # a new session: every process this 'ray start' leaves behind carries its id (see the module doc)
        env = {**os.environ, **self.env(info), **(self._gcs_storage_env(info) | HEAD_RAY_ENV if head else {})}
        proc = subprocess.Popen(
            [self._ray_binary(), "start", *args, *common],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        session = Session(proc.pid, started, "head" if head else node.name)
        info.sessions.append(session)
        with self._changing() as current:  # before waiting: a half-started node is still stopped by 'down'
            current.sessions.append(session)
        try:
            self._finish(proc, "head raylet" if head else f"worker raylet {node.name}")
        except ClusterError as exc:
            if head or RAYLET_TIMEOUT not in str(exc) or not self._registers_late(info, node, env):
                raise

    def _registers_late(
        self, info: ClusterInfo, node: VirtualNode, env: dict[str, str], wait_s: float = LATE_REGISTRATION_S
    ) -> bool:
        """After `ray start` gave up on a worker raylet (it waits a hard-coded 30 s for the raylet to
        register: ``raylet_start_wait_time_s`` in ray/_private/node.py), whether that raylet, which
        `ray start` leaves running, registers with the GCS within ``wait_s`` more. On 2 busy cores
        a raylet can take longer than 30 s; Ray's own wait (``get_node_with_retry``, in a process with
        the cluster's auth environment) decides. Any doubt: False (the original error stands)."""
        try:
            flag = f"--node_manager_port={node.node_manager_port}"
            ids = [
                arg.split("=", 1)[1]
                for p in psutil.process_iter(["cmdline"])
                if flag in (p.info["cmdline"] or [])
                for arg in p.info["cmdline"]
                if arg.startswith("--node_id=")
            ]
            if len(ids) != 1:
                return False
            check = (
                "import sys; from ray._private.services import get_node_with_retry; "
                "get_node_with_retry(sys.argv[1], sys.argv[2], timeout_s=float(sys.argv[3]))"
            )
            done = subprocess.run(
                [sys.executable, "-c", check, info.address, ids[0], str(wait_s)],
                env=env,
                capture_output=True,
                timeout=wait_s + 60,
            )
            return done.returncode == 0
        except (OSError, subprocess.SubprocessError, psutil.Error):
            return False

    def _gcs_storage_env(self, info: ClusterInfo) -> dict[str, str]:
        """Ray's documented GCS fault tolerance for `ray start`: RAY_REDIS_ADDRESS, and (as KubeRay sets
        it per RayCluster) RAY_external_storage_namespace."""
        if not info.redis_port:
            return {}
        return {
            "RAY_REDIS_ADDRESS": f"{HOST}:{info.redis_port}",
            "RAY_external_storage_namespace": info.storage_namespace or "orch",
        }

    def _gcs_storage_args(self, info: ClusterInfo) -> list[str]:
        if not info.redis_port:
            return []
        return ["--redis-password", RedisServer(self.home).password(), "--redis-username", "default"]

    def start_head(self) -> None:
        """(Re)start the head (GCS, head raylet, dashboard) at the same address: after a head loss on
        a cluster with GCS fault tolerance, the worker raylets rejoin it and Ray restores the detached
        actors (the controller) from Redis."""
        info = self.load()
        if info is None:
            raise ClusterError("no embedded cluster is recorded; start one with 'orch up --ha'")
        # `ray start --head` refuses to start where its last head's address file names an address that a
        # local raylet still points at (the surviving worker raylets do); forget it, as `ray stop` does
        # (ray._common.utils.reset_ray_address)
        (Path(info.temp_dir) / "ray_current_cluster").unlink(missing_ok=True)
        self._ray_start(info, head=True)

    @staticmethod
    def _finish(proc: subprocess.Popen, what: str) -> None:
        out, _ = proc.communicate(timeout=180)
        if proc.returncode != 0:
            tail = "\n".join(out.splitlines()[-15:])
            raise ClusterError(f"could not start the {what}:\n{tail}")

    def start_node(self, name: str) -> None:
        """(Re)start a virtual node's raylet with its labels: a replacement after a loss. A start that
        fails is tried once more on fresh ports, after killing what it left: the restart of a lost node
        must not hinge on its old ports (a process of the lost raylet on its way out, or another program
        since, may hold one), and a replacement is a new machine in every other respect anyway."""
        info = self._require()
        node = info.node(name)
        try:
            self._ray_start(info, node=node)  # records and saves the new session
        except ClusterError as first:
            failed = [s for s in info.sessions[-1:] if s.node == name]
            _kill(self.processes(info, failed))
            node.node_manager_port, node.object_manager_port = _free_port(), _free_port()
            with self._changing() as current:
                recorded = current.node(name)
                recorded.node_manager_port, recorded.object_manager_port = (
                    node.node_manager_port,
                    node.object_manager_port,
                )
            try:
                self._ray_start(info, node=node)
            except ClusterError as second:
                raise ClusterError(f"{second}\n(a first start on the node's old ports failed too: {first})") from None

    def add_node(self, pool: str, kind: str, devices: int) -> VirtualNode:
        self._require()
        with self._changing() as info:
            # after the highest number ever used: a retired node's name is never given to a new one
            used = [int(n.name.rsplit("-", 1)[1]) for n in info.nodes if n.name.rsplit("-", 1)[-1].isdigit()]
            number = max([*used, info.retired_upto, 0]) + 1
            node = VirtualNode(f"node-{number}", pool, kind, devices, _free_port(), _free_port())
            info.nodes.append(node)
        self._ray_start(info, node=node)
        return node

    def remove_node(self, name: str, wait_s: float = 10.0) -> int:
        """Forget a retired node: its raylet was drained and is shutting down; whatever of its sessions
        is left after ``wait_s`` (Ray's agents ignore SIGTERM) is killed. How many processes were left."""
        info = self._require()
        node = info.node(name)
        sessions = [s for s in info.sessions if s.node == node.name]
        deadline = time.time() + wait_s
        while self.processes(info, sessions) and time.time() < deadline:
            time.sleep(0.2)
        left = _kill(self.processes(info, sessions))
        with self._changing() as current:  # what others recorded meanwhile stays
            current.nodes = [n for n in current.nodes if n.name != name]
            current.sessions = [s for s in current.sessions if s.node != name]
            number = name.rsplit("-", 1)[-1]
            current.retired_upto = max(current.retired_upto, int(number) if number.isdigit() else 0)
        return left

    def kill_node(self, name: str) -> tuple[int, float]:
        """Kill a virtual node's raylet and its workers at once (SIGKILL): an abrupt node loss. Returns
        how many processes there were and when they were killed (epoch seconds): the node's loss, before
        the wait for them to exit and after the search for them (together up to seconds here)."""
        info = self._require()
        node = info.node(name)
        victims = self.processes(info, [s for s in info.sessions if s.node == node.name])
        if not victims:
            raise ClusterError(f"node {name} has no running raylet")
        killed_at = time.time()
        return _kill(victims), killed_at

    def start_process(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Session:
        """Start one of the cluster's own processes (not a raylet) in a session of its own recorded as
        ``name``, unless that session is alive (then it is returned as it is), replacing a session of
        that name that is gone: `down` stops it with the raylets. The check and the start hold the
        cluster file's lock, so two callers at once start one process. ``env`` is added to the
        environment (not to the command line, which any local user can read). Its output goes to
        ``ORCH_HOME/logs/<name>.log``."""
        self._require()
        logs = self.home / "logs"
        private_dir(logs)
        with self._changing() as current:
            running = [s for s in current.sessions if s.node == name]
            if running and self.processes(current, running):
                return running[-1]
            started = time.time()
            with open(logs / f"{name}.log", "a") as out:
                proc = subprocess.Popen(
                    argv,
                    env={**os.environ, **self.env(current), **(env or {})},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            session = Session(proc.pid, started, name)
            current.sessions = [s for s in current.sessions if s.node != name] + [session]
        return session

    def process_running(self, name: str, info: ClusterInfo | None = None) -> bool:
        """Whether the cluster's process ``name`` (``start_process``) is alive."""
        info = info or self.load()
        return info is not None and bool(self.processes(info, [s for s in info.sessions if s.node == name]))

    def down(self) -> int:
        info = self.load()
        if info is None:
            return 0
        stopped = _kill(self.processes(info))
        if info.redis_port:
            stopped += int(RedisServer(self.home).stop())
        self._remove_temp(info)
        self.info_path.unlink(missing_ok=True)
        return stopped

    def _require(self) -> ClusterInfo:
        info = self.running()
        if info is None:
            raise ClusterError("the embedded cluster is not running; start it with 'orch up'")
        return info

    @staticmethod
    def processes(info: ClusterInfo, sessions: list[Session] | None = None) -> list[psutil.Process]:
        """The live processes of these sessions (default: the whole cluster's) that started after them.

        A zombie is not live: it has exited and only waits for its parent to collect its status. A
        process whose parent exited (the keeper, once the `orch up` that started it is gone) is
        collected by PID 1, and a sandbox's PID 1 may do that seconds later (here, about 1.6 s after
        the kill). Counted as live, a killed keeper kept the next connecting CLI from starting one."""
        wanted = {s.sid: s.started for s in (info.sessions if sessions is None else sessions)}
        found = []
        for proc in psutil.process_iter(["create_time", "status"]):
            try:
                sid = os.getsid(proc.pid)
            except (ProcessLookupError, PermissionError):
                continue
            if sid not in wanted or proc.pid == os.getpid() or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            # slack: psutil adds the boot time of /proc/stat, whole seconds cut down, to the start in
            # clock ticks, so a process can read as started up to a second and a tick before it did
            if (proc.info["create_time"] or 0.0) >= wanted[sid] - CREATE_TIME_SLACK_S:
                found.append(proc)
        return found

    def _remove_temp(self, info: ClusterInfo) -> None:
        """Ray's temporary folder, if it is one orch made (under ORCH_HOME or its own /tmp/orch-ray-*)."""
        temp = Path(info.temp_dir)
        if temp == self.home.resolve() / "ray" or temp.name.startswith("orch-ray-"):
            shutil.rmtree(temp, ignore_errors=True)

    def _cleanup_stale(self) -> None:
        info = self.load()
        if info is not None:
            self.down()


def _kill(procs: list[psutil.Process]) -> int:
    """SIGKILL each (Ray's agents ignore SIGTERM) and wait until they are gone; how many there were."""
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)
    return len(procs)
