"""The embedded Ray cluster: several real raylets on this machine, each a virtual node.

A head raylet (GCS, dashboard, the controller) plus worker raylets that carry devices (CPU worker
slots, resource ``orch_device``) and node labels (``orch-node``, ``orch-pool``, ``orch-pool-kind``).
Killing a raylet is a real node loss; starting one with the same labels is a real replacement.
Token authentication is on (the token lives in ORCH_HOME, mode 0600). Ray advertises the machine's
own interface address even when given 127.0.0.1 (``ray._private.services.resolve_ip_for_localhost``),
so the raylets talk over that address; no traffic leaves the machine. ``cluster.json`` under ORCH_HOME records the address and the nodes, so every command
reuses the running cluster.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from orchestrator.cluster.auth import cluster_token_path, token_path
from orchestrator.errors import OrchError

# Ray starts worker processes at nice 15 so that its own daemons win any contention. On a training
# node the workers are the workload: run them at normal priority (measured in bench/RESULTS.md).
# The GCS declares a silent raylet dead after period x threshold: about 3 s here instead of Ray's ~15 s,
# so a killed virtual node is noticed as quickly as a real one would be by a cloud provider's signal.
EMBEDDED_RAY_ENV = {"RAY_worker_niceness": "0", "RAY_health_check_period_ms": "1000",
                    "RAY_health_check_timeout_ms": "1000", "RAY_health_check_failure_threshold": "3"}
HOST = "127.0.0.1"
NAMESPACE = "orch"
DEFAULT_LAYOUT = "local-on-demand:on-demand:1,local-spot:spot:1,local-spare:spare:1"
OBJECT_STORE_BYTES = 150_000_000


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
class ClusterInfo:
    address: str
    dashboard_port: int
    temp_dir: str
    token_path: str
    nodes: list[VirtualNode] = field(default_factory=list)

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


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
        return ClusterInfo(**data)

    def save(self, info: ClusterInfo) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.info_path, json.dumps(asdict(info), indent=2))

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
        return {**EMBEDDED_RAY_ENV, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": token,
                "DS_ACCELERATOR": os.environ.get("DS_ACCELERATOR", "cpu")}

    # ------------------------------------------------------------------ lifecycle

    def up(self, layout: str = DEFAULT_LAYOUT, devices_per_node: int = 2) -> ClusterInfo:
        """Start the cluster unless it runs; return its description."""
        info = self.running()
        if info is not None:
            return info
        self._cleanup_stale()
        self.home.mkdir(parents=True, exist_ok=True)
        token = cluster_token_path(self.home)
        digest = hashlib.sha1(str(self.home.resolve()).encode()).hexdigest()[:10]
        info = ClusterInfo(address=f"{HOST}:{_free_port()}", dashboard_port=_free_port(),
                           temp_dir=f"/tmp/orch-ray-{digest}", token_path=str(token))
        for i, (pool, kind, devices) in enumerate(parse_layout(layout, devices_per_node), start=1):
            info.nodes.append(VirtualNode(f"node-{i}", pool, kind, devices, _free_port(), _free_port()))
        self.save(info)  # first, so 'orch down' can clean up a half-started cluster
        self._ray_start(info, head=True)
        for node in info.nodes:  # one at a time: each 'ray start' waits for its node by IP, all share 127.0.0.1
            self._ray_start(info, node=node)
        return info

    def _ray_binary(self) -> str:
        return str(Path(sys.executable).with_name("ray"))

    def _ray_start(self, info: ClusterInfo, head: bool = False, node: VirtualNode | None = None) -> None:
        common = ["--disable-usage-stats"]
        if head:
            args = ["--head", "--port", str(info.gcs_port), "--num-cpus", "1", "--resources", '{"orch_head": 1}',
                    "--labels", "orch-node=head,orch-pool=control,orch-pool-kind=control",
                    "--temp-dir", info.temp_dir, "--include-dashboard", "true", "--dashboard-host", HOST,
                    "--dashboard-port", str(info.dashboard_port), "--object-store-memory", str(OBJECT_STORE_BYTES)]
        else:
            args = ["--address", info.address, "--num-cpus", str(node.devices),
                    "--resources", json.dumps({"orch_device": node.devices}), "--labels", node.labels(),
                    "--node-manager-port", str(node.node_manager_port),
                    "--object-manager-port", str(node.object_manager_port),
                    "--object-store-memory", str(OBJECT_STORE_BYTES)]
        proc = subprocess.Popen([self._ray_binary(), "start", *args, *common], env={**os.environ, **self.env(info)},
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._finish(proc, "head raylet" if head else f"worker raylet {node.name}")

    @staticmethod
    def _finish(proc: subprocess.Popen, what: str) -> None:
        out, _ = proc.communicate(timeout=180)
        if proc.returncode != 0:
            tail = "\n".join(out.splitlines()[-15:])
            raise ClusterError(f"could not start the {what}:\n{tail}")

    def start_node(self, name: str) -> None:
        """(Re)start a virtual node's raylet with its labels: a replacement after a loss."""
        info = self._require()
        self._ray_start(info, node=info.node(name))

    def add_node(self, pool: str, kind: str, devices: int) -> VirtualNode:
        info = self._require()
        node = VirtualNode(f"node-{len(info.nodes) + 1}", pool, kind, devices, _free_port(), _free_port())
        info.nodes.append(node)
        self._ray_start(info, node=node)
        self.save(info)
        return node

    def kill_node(self, name: str) -> int:
        """Kill a virtual node's raylet and its workers at once (SIGKILL): an abrupt node loss."""
        info = self._require()
        node = info.node(name)
        victims = [p for p in self._processes(info) if f"--node_manager_port={node.node_manager_port}" in p[1]]
        killed = 0
        for proc, _ in victims:
            for child in proc.children(recursive=True) + [proc]:
                try:
                    child.kill()
                    killed += 1
                except psutil.NoSuchProcess:
                    pass
        if not victims:
            raise ClusterError(f"node {name} has no running raylet")
        return killed

    def down(self) -> int:
        info = self.load()
        if info is None:
            return 0
        stopped = self._kill_all(info)
        self.info_path.unlink(missing_ok=True)
        return stopped

    def _require(self) -> ClusterInfo:
        info = self.running()
        if info is None:
            raise ClusterError("the embedded cluster is not running; start it with 'orch up'")
        return info

    def _processes(self, info: ClusterInfo) -> list[tuple[psutil.Process, str]]:
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            try:
                cmd = " ".join(proc.info["cmdline"] or [])
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if info.temp_dir in cmd or f":{info.gcs_port}" in cmd:
                found.append((proc, cmd))
        return found

    def _kill_all(self, info: ClusterInfo) -> int:
        procs = [p for p, _ in self._processes(info) if p.pid != os.getpid()]
        for proc in procs:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=10)
        return len(procs)

    def _cleanup_stale(self) -> None:
        info = self.load()
        if info is not None:
            self._kill_all(info)
            self.info_path.unlink(missing_ok=True)
