"""`orch k8s render FILE` and `orch submit --target k8s`: orch's jobs as KubeRay objects."""

from __future__ import annotations

import argparse
import os
import sys

import yaml

from orchestrator.cli.common import add_spec_arguments, spec_from_args
from orchestrator.control.client import ControlPlane
from orchestrator.errors import OrchError
from orchestrator.k8s.kueue import resource_flavors, team_queues, topology
from orchestrator.k8s.render import K8sSettings, cluster_manifest, dns_name, job_manifests
from orchestrator.k8s.submit import check_no_standing_gang, create, follow, record
from orchestrator.k8s.validate import problems
from orchestrator.plan.planner import make_plan


def add_k8s_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--namespace", default="orch", help="Kubernetes namespace (default: orch)")
    parser.add_argument(
        "--image",
        default=None,
        help="the orch image for the Ray pods (default: $ORCH_IMAGE; built from docker/Dockerfile)",
    )
    parser.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--context", default=None, help="kubeconfig context")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("k8s", help="render KubeRay manifests for a job spec")
    actions = p.add_subparsers(dest="k8s_command", metavar="ACTION")
    actions.required = True
    r = actions.add_parser("render", help="the ConfigMap + RayJob (or a RayCluster) for the spec, as YAML")
    add_spec_arguments(r)
    add_k8s_arguments(r)
    r.add_argument("--kind", choices=("rayjob", "raycluster"), default="rayjob", help="what to render")
    r.add_argument("--name", help="object name (default: the job name)")
    r.add_argument("--no-validate", action="store_true", help="skip the schema check")
    r.set_defaults(func=cmd_render)
    q = actions.add_parser(
        "kueue",
        help="Kueue flavors, topology and a ClusterQueue + LocalQueue per team (from the "
        "state store's quotas), as YAML",
    )
    q.add_argument("--namespace", default="orch")
    q.add_argument(
        "--team",
        action="append",
        default=[],
        metavar="NAME=DEVICES",
        help="a team not in the state store, with its device quota (repeatable)",
    )
    q.set_defaults(func=cmd_kueue)


def settings_from_args(args: argparse.Namespace):
    image = args.image or os.environ.get("ORCH_IMAGE") or K8sSettings.image
    return K8sSettings(namespace=args.namespace, image=image)


def render_objects(spec, job_id: str, args: argparse.Namespace) -> list[dict]:
    settings = settings_from_args(args)
    if getattr(args, "kind", "rayjob") == "raycluster":
        objects = [cluster_manifest(spec, getattr(args, "name", None) or spec.name, settings)]
    else:
        objects = job_manifests(spec, make_plan(spec), job_id, settings)
    if not getattr(args, "no_validate", False):
        found = [p for o in objects for p in problems(o)]
        if found:
            raise OrchError("the rendered manifests do not validate:\n  " + "\n  ".join(found))
    return objects


def cmd_render(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    objects = render_objects(spec, args.name or spec.name, args)
    yaml.safe_dump_all(objects, sys.stdout, sort_keys=False)
    return 0


def api_client(args: argparse.Namespace):
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    try:
        if args.kubeconfig or args.context or not _in_cluster():
            return config.new_client_from_config(config_file=args.kubeconfig, context=args.context)
        config.load_incluster_config()
        return client.ApiClient()
    except (ConfigException, OSError) as exc:
        raise OrchError(f"cannot reach a Kubernetes cluster: {exc}; give --kubeconfig/--context") from None


def _in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def submit_k8s(args: argparse.Namespace) -> int:
    """`orch submit FILE --target k8s`: render, create, record, follow."""
    if settings_from_args(args).image == K8sSettings.image:
        raise OrchError(
            f"--image: no orch image given (the manifests' '{K8sSettings.image}' is a name for "
            "Kustomize to replace); pass --image REGISTRY/orch:TAG or set ORCH_IMAGE "
            "(build it from docker/Dockerfile)"
        )
    plane = ControlPlane()
    plan, row = plane.prepare(args.file, args.profile, args.overrides)
    row["source"] = {**row["source"], "target": "k8s", "namespace": args.namespace}
    objects = render_objects(plan.spec, row["id"], args)
    api = api_client(args)
    check_no_standing_gang(api, args.namespace)
    created = create(api, objects)
    record(plane.store, row, created, args.namespace)
    print(f"submitted {row['id']} to Kubernetes: {', '.join(created)} in namespace {args.namespace}")
    if args.detach:
        return 0
    final = follow(
        api,
        plane.store,
        row["id"],
        args.namespace,
        dns_name(row["id"]),
        on_change=lambda state, status: print(f"  {state.value}: {status.get('message') or ''}".rstrip()),
        poll_s=float(getattr(args, "poll", 5.0)),
    )
    print(f"{row['id']}: {final.value}")
    return 0 if final.value == "succeeded" else 1


def cmd_kueue(args: argparse.Namespace) -> int:
    quotas = dict(ControlPlane().store.team_quotas())
    for item in args.team:
        name, _, devices = item.partition("=")
        if not name or not devices.isdigit():
            raise OrchError(f"--team {item!r}: give NAME=DEVICES, e.g. --team pretrain=2048")
        quotas[name] = int(devices)
    if not quotas:
        raise OrchError(
            "no team has a device quota: set one (orch budget TEAM --quota-devices N) or give --team NAME=DEVICES"
        )
    yaml.safe_dump_all(
        resource_flavors() + [topology()] + team_queues(quotas, args.namespace), sys.stdout, sort_keys=False
    )
    return 0
