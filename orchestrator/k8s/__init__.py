"""orch on Kubernetes: KubeRay manifests rendered from a job spec, and submission through the API."""
