"""The orch image and its start-up check: the Dockerfile installs what the Ray pods need (CUDA base,
EFA installer with aws-ofi-nccl, torch, DeepSpeed, Ray of the manifests' rayVersion, orch) with the
NCCL/EFA environment, runs as the manifests' non-root uid; the efa-check init container refuses a
worker whose NCCL did not pick EFA. NCCL log lines as NCCL and aws-ofi-nccl v1.21.1 print them
(NCCL src/init.cc "Using network %s"; aws-ofi-nccl src/nccl_ofi_net.cpp "Selected provider is %s,
fabric is %s (found %d nics)", src/nccl_ofi_interface_nvidia.cpp name "Libfabric")."""

from __future__ import annotations

import re

from orchestrator.k8s.efa_check import main, verdict
from orchestrator.k8s.kustomize import build
from orchestrator.k8s.render import RAY_VERSION, RUN_AS
from tests.conftest import ROOT

DOCKERFILE = (ROOT / "docker" / "Dockerfile").read_text()
EFA_LOG = """ip-10-0-1-11:412:412 [0] NCCL INFO NET/Plugin: Loaded net plugin Libfabric (v9)
ip-10-0-1-11:412:412 [0] NCCL INFO NET/OFI Selected provider is efa, fabric is efa (found 32 nics)
ip-10-0-1-11:412:412 [0] NCCL INFO Using network Libfabric
"""
SOCKET_LOG = """ip-10-0-1-11:412:412 [0] NCCL INFO NET/Plugin: Could not find: libnccl-net.so.
ip-10-0-1-11:412:412 [0] NCCL INFO NET/Socket : Using [0]eth0:10.0.1.11<0>
ip-10-0-1-11:412:412 [0] NCCL INFO Using network Socket
"""
TCP_LOG = EFA_LOG.replace("provider is efa, fabric is efa", "provider is tcp, fabric is 10.0.0.0/16")


def test_the_verdict_reads_what_nccl_chose():
    assert verdict(EFA_LOG) == (True, "NCCL uses Libfabric with the efa provider")
    ok, why = verdict(SOCKET_LOG)
    assert not ok and "Socket" in why and "aws-ofi-nccl" in why
    ok, why = verdict(TCP_LOG)
    assert not ok and "tcp" in why and "FI_PROVIDER=efa" in why
    assert verdict("")[0] is False


def test_the_check_fails_the_init_container(tmp_path, capsys):
    log = tmp_path / "nccl.log"
    log.write_text(SOCKET_LOG)
    assert main(["--log", str(log)]) == 1 and "Socket" in capsys.readouterr().err
    log.write_text(EFA_LOG)
    assert main(["--log", str(log)]) == 0


def test_every_efa_worker_runs_the_check_with_its_devices():
    cluster = next(o for o in build(ROOT / "k8s" / "overlays" / "prod") if o["kind"] == "RayCluster")["spec"]
    for group in cluster["workerGroupSpecs"]:
        pod = group["template"]["spec"]
        check = next(c for c in pod["initContainers"] if c["name"] == "efa-check")
        assert check["command"] == ["python", "-m", "orchestrator.k8s.efa_check"]
        assert check["resources"]["limits"] == pod["containers"][0]["resources"]["limits"]


def test_the_dockerfile_builds_what_the_pods_need():
    assert re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:12\.\d+\.\d+-cudnn-devel", DOCKERFILE, re.MULTILINE)
    assert "efa_installer.sh -y --skip-kmod" in DOCKERFILE and "/opt/amazon/ofi-nccl/lib" in DOCKERFILE
    assert f"ARG RAY_VERSION={RAY_VERSION}" in DOCKERFILE  # the rayVersion the manifests declare
    for needle in (
        "torch==${TORCH_VERSION}",
        "deepspeed==${DEEPSPEED_VERSION}",
        "pip install --no-cache-dir /src/orch",
        "FI_PROVIDER=efa",
        "FI_EFA_USE_DEVICE_RDMA=1",
        f"USER {RUN_AS}",
        f"--uid {RUN_AS}",
    ):
        assert needle in DOCKERFILE, needle
