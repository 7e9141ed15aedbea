"""Check manifests before they reach an API server: built-in kinds against the Kubernetes API's own
schemas (kubernetes-validate, strict: unknown fields are errors), KubeRay kinds against the CRDs'
OpenAPI schemas (copied from KubeRay into ``crds/``), and the Prometheus operator's ServiceMonitor
and Kueue's objects against the fields orch uses (their CRDs are not vendored here)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

KUBERNETES_VERSION = "1.32.0"
CRDS = Path(__file__).parent / "crds"


@lru_cache(maxsize=None)
def crd_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> openAPIV3Schema for every vendored CRD version."""
    schemas = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schemas[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return schemas


SERVICE_MONITOR = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {"type": "object"},
                "namespaceSelector": {"type": "object"},
                "jobLabel": {"type": "string"},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": {"type": "string"},
                            "scheme": {"type": "string"},
                        },
                    },
                },
            },
        }
    },
}


_QUANTITY = {"anyOf": [{"type": "integer"}, {"type": "string"}]}
KUEUE = {
    "ResourceFlavor": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "nodeLabels": {"type": "object", "additionalProperties": {"type": "string"}},
            "nodeTaints": {"type": "array", "items": {"type": "object", "required": ["key", "effect"]}},
            "tolerations": {"type": "array"},
            "topologyName": {"type": "string"},
        },
    },
    "Topology": {
        "type": "object",
        "required": ["levels"],
        "additionalProperties": False,
        "properties": {
            "levels": {
                "type": "array",
                "minItems": 1,
                "maxItems": 16,
                "items": {
                    "type": "object",
                    "required": ["nodeLabel"],
                    "additionalProperties": False,
                    "properties": {"nodeLabel": {"type": "string"}},
                },
            }
        },
    },
    "ClusterQueue": {
        "type": "object",
        "required": ["resourceGroups"],
        "additionalProperties": False,
        "properties": {
            "cohort": {"type": "string"},
            "namespaceSelector": {"type": "object"},
            "queueingStrategy": {"enum": ["StrictFIFO", "BestEffortFIFO"]},
            "resourceGroups": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["coveredResources", "flavors"],
                    "additionalProperties": False,
                    "properties": {
                        "coveredResources": {"type": "array", "items": {"type": "string"}},
                        "flavors": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name", "resources"],
                                "additionalProperties": False,
                                "properties": {
                                    "name": {"type": "string"},
                                    "resources": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": ["name", "nominalQuota"],
                                            "additionalProperties": False,
                                            "properties": {
                                                "name": {"type": "string"},
                                                "nominalQuota": _QUANTITY,
                                                "borrowingLimit": _QUANTITY,
                                            },
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
    "LocalQueue": {
        "type": "object",
        "required": ["clusterQueue"],
        "additionalProperties": False,
        "properties": {"clusterQueue": {"type": "string"}},
    },
}


def _kueue_problems(manifest: dict, where: str) -> list[str]:
    import jsonschema

    schema = KUEUE.get(manifest.get("kind", ""))
    if schema is None:
        return [f"{where}: orch does not use Kueue kind {manifest.get('kind')}"]
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{where}: spec.{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in validator.iter_errors(manifest.get("spec", {}))
    ]


def _structural(schema: dict) -> dict:
    """A CRD schema as JSON Schema: objects without ``properties`` (free-form) stay open; objects with
    them reject unknown fields, as the API server prunes or refuses them."""
    schema = dict(schema)
    if (
        schema.get("type") == "object"
        and "properties" in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        schema.setdefault("additionalProperties", False)
    if schema.get("x-kubernetes-int-or-string"):
        schema.pop("type", None)
        schema["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    for key in ("properties", "patternProperties"):
        if key in schema:
            schema[key] = {k: _structural(v) for k, v in schema[key].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            schema[key] = _structural(schema[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in schema:
            schema[key] = [_structural(s) for s in schema[key]]
    return schema


def problems(manifest: dict) -> list[str]:
    """Everything wrong with one manifest (empty when it is valid)."""
    import jsonschema
    import kubernetes_validate

    api, kind = manifest.get("apiVersion", ""), manifest.get("kind", "")
    where = f"{kind}/{manifest.get('metadata', {}).get('name', '?')}"
    if (api, kind) in crd_schemas():
        schema = {**_structural(crd_schemas()[(api, kind)]), "additionalProperties": True}
        validator = jsonschema.Draft7Validator(schema)
        return [
            f"{where}: {'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
            for e in sorted(validator.iter_errors(manifest), key=lambda e: list(e.absolute_path))
        ]
    if api.startswith("kueue.x-k8s.io/"):
        return _kueue_problems(manifest, where)
    if api.startswith("monitoring.coreos.com/"):
        validator = jsonschema.Draft7Validator(SERVICE_MONITOR)
        return [f"{where}: {e.message}" for e in validator.iter_errors(manifest)]
    try:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path) or "<root>"
        return [f"{where}: {path}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [f"{where}: no schema for {api} {kind} in Kubernetes {KUBERNETES_VERSION}: {exc}"]
    return []
