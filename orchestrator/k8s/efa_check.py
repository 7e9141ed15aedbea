"""Start-up check: did NCCL pick EFA? A p5 node without the EFA path (no device plugin, a missing
aws-ofi-nccl, a wrong FI_PROVIDER) still trains, over TCP sockets, at a fraction of the speed, and
nothing else says so. The worker pods' init container ``efa-check`` (orchestrator/k8s/render.py)
runs ``python -m orchestrator.k8s.efa_check``: it initialises NCCL on the node's GPUs with
``NCCL_DEBUG=INFO`` written to a file and reads what NCCL chose. The pod does not start unless NCCL
uses the Libfabric network plugin (aws-ofi-nccl) with the ``efa`` provider.

The log lines are NCCL's ``Using network %s`` (src/init.cc; the plugin's name is ``Libfabric`` in
aws-ofi-nccl v1.21 src/nccl_ofi_interface_nvidia.cpp, ``AWS Libfabric`` in older releases) and
aws-ofi-nccl's ``Selected provider is %s, fabric is %s (found %d nics)`` (src/nccl_ofi_net.cpp).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

NETWORK = re.compile(r"Using network (.+?)\s*$", re.MULTILINE)
PROVIDER = re.compile(r"Selected provider is (\S+?),", re.IGNORECASE)


def verdict(log: str) -> tuple[bool, str]:
    """(EFA in use, what NCCL chose, said plainly) from NCCL's INFO log."""
    networks = sorted({m.strip() for m in NETWORK.findall(log)})
    providers = sorted(set(PROVIDER.findall(log)))
    if not networks:
        return False, "NCCL did not say which network it uses (was NCCL_DEBUG=INFO set, did NCCL initialise?)"
    libfabric = all("Libfabric" in n for n in networks)
    if libfabric and providers == ["efa"]:
        return True, f"NCCL uses {networks[0]} with the efa provider"
    if not libfabric:
        return False, (
            f"NCCL uses {', '.join(networks)}, not Libfabric: aws-ofi-nccl is not loaded (is "
            "/opt/amazon/ofi-nccl/lib on LD_LIBRARY_PATH?); traffic would go over TCP"
        )
    return False, (
        f"NCCL uses Libfabric with provider {', '.join(providers) or 'unknown'}, not efa: check "
        "FI_PROVIDER=efa and that the pod requests vpc.amazonaws.com/efa"
    )


def nccl_log(gpus: int) -> str:
    """Initialise NCCL over this node's GPUs (one process, one communicator per GPU) and return its log."""
    import torch

    folder = tempfile.mkdtemp(prefix="orch-efa-check-")
    os.environ.update(
        {"NCCL_DEBUG": "INFO", "NCCL_DEBUG_SUBSYS": "INIT,NET", "NCCL_DEBUG_FILE": f"{folder}/nccl.%p.log"}
    )
    from torch.cuda import nccl

    tensors = [torch.ones(1, device=f"cuda:{i}") for i in range(gpus)]
    nccl.all_reduce(tensors)
    torch.cuda.synchronize()
    return "".join(p.read_text() for p in sorted(Path(folder).glob("nccl.*.log")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", help="judge this NCCL INFO log instead of initialising NCCL")
    parser.add_argument("--gpus", type=int, default=None, help="GPUs to use (default: all visible)")
    args = parser.parse_args(argv)
    if args.log:
        text = Path(args.log).read_text()
    else:
        import torch

        text = nccl_log(args.gpus or torch.cuda.device_count())
    ok, why = verdict(text)
    print(f"efa-check: {why}", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
