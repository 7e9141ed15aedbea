"""The subset of ``kustomize build`` that k8s/ uses, so the manifests can be built and validated
where neither kubectl nor kustomize is installed (CI). Supported: ``resources`` (files and
directories), ``namespace``, ``images``, ``configMapGenerator`` with files and
``disableNameSuffixHash``, ``patches`` with a target and an inline JSON 6902 patch, and ``replacements``
(after the patches, as kustomize orders them) from one source field, optionally a ``delimiter``/``index``
part of it, into target field paths of dotted names, list indices and ``[key=value]`` selectors. Anything
else is refused rather than silently ignored; where kubectl exists, a test checks that this and
``kubectl kustomize`` agree.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from orchestrator.errors import OrchError

CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "PriorityClass",
    "CustomResourceDefinition",
    "StorageClass",
    "PersistentVolume",
    "ResourceFlavor",
    "ClusterQueue",
    "Topology",
}
SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "images", "configMapGenerator", "patches", "replacements"}


class KustomizeError(OrchError):
    pass


def build(directory: str | Path) -> list[dict]:
    root = Path(directory)
    config = yaml.safe_load((root / "kustomization.yaml").read_text())
    unknown = set(config) - SUPPORTED
    if unknown:
        raise KustomizeError(f"{root}/kustomization.yaml: unsupported fields {sorted(unknown)}")
    objects: list[dict] = []
    for entry in config.get("resources", []):
        path = root / entry
        if path.is_dir():
            objects += build(path)
        else:
            objects += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for generator in config.get("configMapGenerator", []):
        options = generator.get("options", {})
        if not options.get("disableNameSuffixHash"):
            raise KustomizeError("configMapGenerator needs options.disableNameSuffixHash: true here")
        data = {Path(f).name: (root / f).read_text() for f in generator.get("files", [])}
        meta = {"name": generator["name"]}
        if options.get("labels"):
            meta["labels"] = dict(options["labels"])
        objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})
    if "namespace" in config:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = config["namespace"]
            for subject in obj.get("subjects", []) if obj["kind"] in ("RoleBinding", "ClusterRoleBinding") else []:
                if subject.get("kind") == "ServiceAccount":
                    subject["namespace"] = config["namespace"]
    for image in config.get("images", []):
        for obj in objects:
            _retag(obj, image)
    for patch in config.get("patches", []):
        targets = [o for o in objects if _matches(o, patch.get("target", {}))]
        if not targets:
            raise KustomizeError(f"{root}: a patch matches no object: {patch.get('target')}")
        ops = yaml.safe_load(patch["patch"])
        if not isinstance(ops, list):
            raise KustomizeError(f"{root}: only JSON 6902 patches (a list of operations) are supported")
        for obj in targets:
            for op in ops:
                _apply(obj, op)
    for replacement in config.get("replacements", []):
        _replace(root, objects, replacement)
    return objects


def _replace(root: Path, objects: list[dict], replacement: dict) -> None:
    """kustomize's ReplacementTransformer for one source: copy a field's value into the targets' fields."""
    source = replacement["source"]
    found = [o for o in objects if _matches(o, source)]
    if len(found) != 1:
        raise KustomizeError(f"{root}: a replacement source must match one object, not {len(found)}: {source}")
    value = _field(found[0], source["fieldPath"])
    options = source.get("options", {})
    if "delimiter" in options:
        value = str(value).split(options["delimiter"])[options.get("index", 0)]
    for target in replacement["targets"]:
        selected = [o for o in objects if _matches(o, target["select"])]
        if not selected:
            raise KustomizeError(f"{root}: a replacement target matches no object: {target['select']}")
        for obj in selected:
            for path in target["fieldPaths"]:
                *parents, last = _path_parts(path)
                parent = _field(obj, ".".join(parents)) if parents else obj
                key = int(last) if isinstance(parent, list) else last
                if isinstance(parent, dict) and last not in parent:
                    raise KustomizeError(f"{root}: replacement target field {path} is missing in {obj['kind']}")
                parent[key] = copy.deepcopy(value)


def _path_parts(path: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in path:  # dots inside [key=value] selectors belong to the value
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "." and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def _field(obj, path: str):
    node = obj
    for part in _path_parts(path):
        if part.startswith("[") and part.endswith("]"):
            key, _, wanted = part[1:-1].partition("=")
            matches = [item for item in node if isinstance(item, dict) and str(item.get(key)) == wanted]
            if len(matches) != 1:
                raise KustomizeError(f"field path {path}: {part} matches {len(matches)} items")
            node = matches[0]
        elif isinstance(node, list):
            node = node[int(part)]
        else:
            if part not in node:
                raise KustomizeError(f"field path {path}: no field {part!r}")
            node = node[part]
    return node


def _matches(obj: dict, target: dict) -> bool:
    group, _, version = obj["apiVersion"].rpartition("/")
    return all(
        [
            target.get("kind") in (None, obj["kind"]),
            target.get("name") in (None, obj["metadata"]["name"]),
            target.get("group") in (None, group),
            target.get("version") in (None, version),
        ]
    )


def _retag(node, image: dict) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "image" and isinstance(value, str) and value.rsplit(":", 1)[0] == image["name"]:
                name = image.get("newName", image["name"])
                tag = image.get("newTag", value.rsplit(":", 1)[1] if ":" in value else "latest")
                node[key] = f"{name}:{tag}"
            else:
                _retag(value, image)
    elif isinstance(node, list):
        for item in node:
            _retag(item, image)


def _apply(obj: dict, op: dict) -> None:
    parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
    parent = obj
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    last = parts[-1]
    if op["op"] in ("replace", "add"):
        value = copy.deepcopy(op["value"])
        if isinstance(parent, list):
            index = len(parent) if last == "-" else int(last)
            if op["op"] == "add":
                parent.insert(index, value)
            else:
                parent[index] = value
        else:
            if op["op"] == "replace" and last not in parent:
                raise KustomizeError(f"replace of a missing path {op['path']}")
            parent[last] = value
    elif op["op"] == "remove":
        del parent[int(last) if isinstance(parent, list) else last]
    else:
        raise KustomizeError(f"unsupported patch operation {op['op']}")
