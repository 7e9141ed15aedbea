"""Init container: write this pod's Ray node labels, including its node's network topology.

``python -m orchestrator.k8s.node_labels --node NODE --pool P --kind K --out FILE`` reads the
Kubernetes node with the pod's service account (``get nodes``: k8s/base/rbac.yaml, orch-ray) and
writes the YAML file ``ray start --labels-file`` reads. The topology is EKS's network topology
labels (``topology.k8s.aws/network-node-layer-1..3``, spine to leaf), which Kueue's topology-aware
placement uses too; the same string the Kubernetes node provider computes (``topology_of``).
"""

from __future__ import annotations

import argparse
import sys

import yaml

from orchestrator.cluster.kubernetes import topology_of


def labels_for(node_name: str, pool: str, kind: str, node_labels: dict[str, str]) -> dict[str, str]:
    return {
        "orch-node": node_name,
        "orch-pool": pool,
        "orch-pool-kind": kind,
        "orch-topology": topology_of(node_labels),
    }


def read_node_labels(api_client, node: str) -> dict[str, str]:
    from kubernetes import client

    return client.CoreV1Api(api_client).read_node(node).metadata.labels or {}


def main(argv: list[str] | None = None, api_client=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--node", required=True)
    parser.add_argument("--pool", required=True)
    parser.add_argument("--kind", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if api_client is None:
        from kubernetes import client, config

        config.load_incluster_config()
        api_client = client.ApiClient()
    labels = labels_for(args.node, args.pool, args.kind, read_node_labels(api_client, args.node))
    with open(args.out, "w") as handle:
        yaml.safe_dump(labels, handle)
    print(f"ray labels for {args.node}: {labels}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
