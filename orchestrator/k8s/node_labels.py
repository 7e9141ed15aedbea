"""Init container: write this pod's Ray node labels, including its node's topology labels.

``python -m orchestrator.k8s.node_labels --node NODE --pool P --kind K --out FILE`` reads the
Kubernetes node (rack from ``orch.dev/rack``, network block from ``orch.dev/network-block``, zone)
with the pod's service account and writes the YAML file ``ray start --labels-file`` reads.
"""

from __future__ import annotations

import argparse
import sys

import yaml

TOPOLOGY_LABELS = ("orch.dev/rack", "orch.dev/network-block", "topology.kubernetes.io/zone")


def labels_for(node_name: str, pool: str, kind: str, node_labels: dict[str, str]) -> dict[str, str]:
    topology = "/".join(node_labels[k] for k in TOPOLOGY_LABELS if node_labels.get(k))
    return {"orch-node": node_name, "orch-pool": pool, "orch-pool-kind": kind, "orch-topology": topology}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--node", required=True)
    parser.add_argument("--pool", required=True)
    parser.add_argument("--kind", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    from kubernetes import client, config

    config.load_incluster_config()
    node = client.CoreV1Api().read_node(args.node)
    labels = labels_for(args.node, args.pool, args.kind, node.metadata.labels or {})
    with open(args.out, "w") as handle:
        yaml.safe_dump(labels, handle)
    print(f"ray labels for {args.node}: {labels}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
