"""Create a rendered job on a Kubernetes cluster and follow it.

Objects are created through the ``kubernetes`` client (the ConfigMap, then the RayJob); a refusal
becomes a message that says what to do (403: RBAC; 409: it exists; 422: the fields the API server
rejected). Following reads the RayJob's status and moves the job's row in orch's state store through
the same states as a local job, so `orch list`, `orch status` and the dashboard show it.
"""

from __future__ import annotations

import json
import time
from typing import Callable

from orchestrator.cluster.kubernetes import KubernetesError, explain
from orchestrator.k8s.render import dns_name
from orchestrator.ledger.report import closing_intervals
from orchestrator.lifecycle import ENDINGS, JobState, Owner
from orchestrator.state.store import EventRecord, StaleState, StateStore

RAY_GROUP, RAY_VERSION, RAYJOBS, RAYCLUSTERS = "ray.io", "v1", "rayjobs", "rayclusters"
# The long-lived RayCluster of k8s/base (``orch k8s render ... --kind raycluster --name orch``) that
# orch's Ray controller runs jobs on; a test checks the Kustomize base names it so.
STANDING_CLUSTER = "orch"
TRAINING_PRIORITY = "orch-training"


class StandingClusterHoldsNodes(KubernetesError):
    """The namespace runs the controller's long-lived RayCluster with training workers: a RayJob would
    compete with it for the same nodes at the same priority and wait in Kueue."""


def standing_workers(cluster: dict) -> int:
    """Training worker pods the standing RayCluster asks for (its hot spares do not count: they are
    ``orch-spare``, which never preempts and which a RayJob's gang may take)."""
    return sum(
        int(group.get("replicas") or 0)
        for group in cluster.get("spec", {}).get("workerGroupSpecs", [])
        if group.get("template", {}).get("spec", {}).get("priorityClassName") == TRAINING_PRIORITY
    )


def check_no_standing_gang(api_client, namespace: str) -> None:
    """Refuse a RayJob in a namespace whose standing RayCluster holds training nodes.

    A cluster runs jobs one way: either orch's controller on the standing RayCluster
    (``k8s/overlays/prod``: its worker groups hold the pools' nodes) or one RayJob per job, admitted
    by Kueue (``k8s/overlays/prod-rayjob``: the standing cluster keeps only its head). Both at once
    would hold every GPU node twice over at the same priority: the RayJob would never start."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    custom = client.CustomObjectsApi(api_client)
    try:
        cluster = custom.get_namespaced_custom_object(RAY_GROUP, RAY_VERSION, namespace, RAYCLUSTERS, STANDING_CLUSTER)
    except ApiException as exc:
        if exc.status == 404:
            return
        raise explain(exc, f"reading RayCluster {namespace}/{STANDING_CLUSTER}") from None
    workers = standing_workers(cluster)
    if workers:
        raise StandingClusterHoldsNodes(
            f"namespace {namespace}: orch's standing RayCluster '{STANDING_CLUSTER}' holds {workers} training "
            "worker(s), so a RayJob would wait behind it for the same nodes; submit without --target k8s "
            "(orch's controller runs the job on that cluster), or deploy k8s/overlays/prod-rayjob, whose "
            "standing cluster keeps only its head"
        )


def _rejected_fields(exc) -> str:
    try:
        causes = json.loads(exc.body or "{}").get("details", {}).get("causes", [])
    except (ValueError, AttributeError):
        return ""
    return "; ".join(f"{c.get('field', '?')}: {c.get('message', '')}" for c in causes)


def create(api_client, manifests: list[dict]) -> list[str]:
    """Create each manifest (ConfigMap, RayJob); the 'Kind/name' of each, or a clear error."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core, custom = client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
    created = []
    for manifest in manifests:
        kind, meta = manifest["kind"], manifest["metadata"]
        what = f"{kind}/{meta['name']} in namespace {meta['namespace']}"
        try:
            if kind == "ConfigMap":
                core.create_namespaced_config_map(meta["namespace"], manifest)
            elif kind == "RayJob":
                custom.create_namespaced_custom_object(RAY_GROUP, RAY_VERSION, meta["namespace"], RAYJOBS, manifest)
            else:
                raise KubernetesError(f"cannot submit a {kind}")
        except ApiException as exc:
            error = explain(exc, f"creating {what}")
            fields = _rejected_fields(exc) if exc.status == 422 else ""
            raise KubernetesError(str(error) + (f": {fields}" if fields else "")) from None
        created.append(f"{kind}/{meta['name']}")
    return created


def job_state_of(status: dict) -> JobState:
    """A RayJob's status as orch's job state."""
    deployment = status.get("jobDeploymentStatus", "")
    job = status.get("jobStatus", "")
    if deployment in ("Complete",) or job == "SUCCEEDED":
        return JobState.SUCCEEDED if job in ("SUCCEEDED", "") else JobState.FAILED
    if deployment == "Failed" or job in ("FAILED", "STOPPED"):
        return JobState.FAILED
    if deployment == "Running" and job == "RUNNING":
        return JobState.RUNNING
    if deployment in ("Initializing", "Running", "Waiting"):
        return JobState.PLACING
    return JobState.QUEUED


PATH = {
    JobState.QUEUED: [],
    JobState.PLACING: [JobState.PLACING],
    JobState.RUNNING: [JobState.PLACING, JobState.RUNNING],
    JobState.SUCCEEDED: [JobState.PLACING, JobState.RUNNING, JobState.SUCCEEDED],
    JobState.FAILED: [JobState.FAILED],
}


def record(store: StateStore, row: dict, created: list[str], namespace: str) -> str:
    """Enqueue the job's row as the Kubernetes control plane's (``Owner.KUBERNETES``): ``follow`` moves
    it, and no Ray controller sharing the state store acts on it (it would train the job a second time)."""
    return store.insert_job(
        row,
        [
            EventRecord(
                "job.submitted",
                f"{row['id']}: submitted to Kubernetes ({', '.join(created)} in {namespace})",
                {"objects": created, "namespace": namespace},
            )
        ],
        owner=Owner.KUBERNETES,
    )


class NotOurs(KubernetesError):
    """The job row belongs to another control plane."""


def follow(
    api_client,
    store: StateStore,
    job_id: str,
    namespace: str,
    name: str,
    on_change: Callable[[JobState, dict], None] = lambda s, st: None,
    poll_s: float = 5.0,
    timeout_s: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> JobState:
    """Poll the RayJob until it ends, moving the job's row through the states it passes."""
    owner = store.job_owner(job_id)
    if owner != Owner.KUBERNETES:
        raise NotOurs(f"job {job_id} is run by orch's {owner.value} controller, not by a RayJob; see 'orch status'")
    started = time.time()
    while True:
        current = sync(api_client, store, job_id, namespace, name, on_change)
        if current.is_terminal:
            return current
        if timeout_s is not None and time.time() - started > timeout_s:
            return current
        sleep(poll_s)


def sync(
    api_client,
    store: StateStore,
    job_id: str,
    namespace: str,
    name: str,
    on_change: Callable[[JobState, dict], None] = lambda s, st: None,
) -> JobState:
    """Read the RayJob once and move the job's row through the states its status has passed.

    Two followers may read the same RayJob (`orch submit` while it follows, and the controller, which
    follows every RayJob of its namespace so a detached one ends too): each move is compare-and-set,
    so whichever comes second finds the row moved (``StaleState``) and takes it as it is."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    custom = client.CustomObjectsApi(api_client)
    try:
        obj = custom.get_namespaced_custom_object(RAY_GROUP, RAY_VERSION, namespace, RAYJOBS, name)
    except ApiException as exc:
        raise explain(exc, f"reading RayJob {namespace}/{name}") from None
    except HTTPError as exc:  # the API server unreachable: the controller's next pass tries again
        raise KubernetesError(f"reading RayJob {namespace}/{name}: {exc}") from None
    status = obj.get("status") or {}
    target = job_state_of(status)
    current = JobState(store.get_job(job_id)["state"])
    for step in PATH[target]:
        if current == step or current.is_terminal:
            continue
        if target == JobState.FAILED or step in _after(current):
            message = status.get("message") or status.get("jobStatus") or status.get("jobDeploymentStatus", "")
            at = store.clock.now()
            try:
                store.transition(
                    job_id,
                    current,
                    step,
                    f"RayJob {name}: {message}",
                    events=[EventRecord(f"job.{step.value}", f"{job_id}: RayJob {name} {message}")],
                    updates={"message": message} if step == JobState.FAILED else {},
                    extra=_ledger_rows(store, job_id, step, at),
                    at=at,
                )
            except StaleState:  # the other follower moved it first
                return JobState(store.get_job(job_id)["state"])
            on_change(step, status)
            current = step
    return current


def follow_namespace(api_client, store: StateStore, namespace: str, log: Callable[[str], None] = print) -> int:
    """One pass over the RayJobs orch submitted to ``namespace`` that have not ended (the deployed
    controller's loop): each row moves as its RayJob did; the number of rows read."""
    rows = [
        j
        for j in store.list_jobs(owner=Owner.KUBERNETES)
        if not JobState(j["state"]).is_terminal and (j["source"] or {}).get("namespace", namespace) == namespace
    ]
    for job in rows:
        try:
            sync(api_client, store, job["id"], namespace, dns_name(job["id"]))
        except KubernetesError as exc:
            log(f"orch controller: following {job['id']}: {exc}")
    return len(rows)


def _ledger_rows(store: StateStore, job_id: str, to: JobState, at: float):
    """When the RayJob ends, its last attempt's device-hours go into the ledger in the same
    transaction as the row's move (the gang its driver recorded, priced as recorded, split by category
    from the step metrics its runner wrote); an attempt with no gang record held nothing orch knows of."""
    if not to.is_terminal:
        return None
    job = store.job(job_id)
    if not job.assignment or not job.attempt:
        return None
    intervals = closing_intervals(store, job, ENDINGS[to], at)
    return lambda conn, now: store.insert_intervals(conn, job.team, intervals)


def _after(state: JobState) -> list[JobState]:
    order = [JobState.QUEUED, JobState.PLACING, JobState.RUNNING, JobState.SUCCEEDED]
    return order[order.index(state) + 1 :] if state in order else []
