"""The layer rule of docs/architecture.md, checked on the source (AST, nothing imported).

- Packages point down: a module imports its own package or packages of a lower layer, never one of
  the same layer or above (KubeRay's ``apis/`` never imports ``controllers/``; orch's ``state/``,
  ``cluster/``, ``ledger/``, ``train/`` never import ``control/``).
- No import cycle between modules, counting imports inside functions too.
- Package ``__init__`` files import nothing (a name has one import path: its defining module).
- An import inside a function is allowed only where it defers a heavy or optional dependency, and is
  listed with the reason: third-party packages in ``DEFERRED_PACKAGES``, orch modules (which load one
  of those packages that the importer does not) in ``DEFERRED_MODULES``. The standard library and
  everything else go at the top of the module.
- ``orch --help`` and ``orch validate`` load none of ``DEFERRED_PACKAGES`` (start-up stays fast).
A new upward import, cycle or needless in-function import fails here with the file and line.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "orchestrator"

# The layers, lowest first (docs/architecture.md draws them). Same-layer packages stay independent.
LAYERS = [
    {"lifecycle", "paths", "private", "clock", "errors", "humanize", "__init__"},  # leaves: import nothing from orch
    {"spec", "placeholders"},
    {"state"},
    {"plan"},
    {"cluster", "checkpoint"},
    {"ledger", "train"},
    {"forecast"},
    {"control"},
    {"simulate", "k8s"},
    {"dashboard"},
    {"cli"},
    {"__main__"},
]
RANK = {part: i for i, layer in enumerate(LAYERS) for part in layer}
# Third-party packages that orch modules import inside the function that needs them, and why. Each is
# slow to import or optional at run time; no other package (and nothing of the standard library) is
# imported inside a function.
DEFERRED_PACKAGES = {
    "ray": "seconds to import; the CLI sets Ray's auth environment (cluster/auth.py) before anything imports "
    "it, and only commands that reach a cluster load it",
    "torch": "seconds to import; only training, checkpoint contents and data preparation need it",
    "deepspeed": "seconds to import (it probes for accelerators); only the training workers build engines",
    "safetensors": "safetensors.torch imports torch",
    "kubernetes": "the Kubernetes client (thousands of generated models); only what talks to a cluster",
    "urllib3": "the Kubernetes client's HTTP layer (with http.client, email): only the watches that use it",
    "boto3": "only s3:// checkpoints and data shards",
    "botocore": "boto3's core, with it",
    "fastapi": "only `orch dashboard`",
    "starlette": "FastAPI's core, with it",
    "uvicorn": "only `orch dashboard`",
    "plotly": "only the dashboard's charts",
    "matplotlib": "only `orch simulate --sweep ... --chart`",
    "alembic": "only schema migrations and backups",
    "prometheus_client": "only `orch metrics`",
    "numpy": "forecasts (Monte Carlo), simulated timelines, data shards: not `orch list`, `orch plan`",
    "jsonschema": "only the manifest checks of `orch k8s render/submit`; not a dependency of orch itself",
    "kubernetes_validate": "the manifests' schemas, an optional (dev) dependency",
}

# Imports of orch modules inside functions, and why: each imported module loads one of
# DEFERRED_PACKAGES that the importer does not (checked below). There is no other reason: an import
# cycle is not one (test_no_import_cycles counts these imports too).
DEFERRED_MODULES = {
    ("orchestrator.cli.checkpoint_commands", "orchestrator.checkpoint.locate"): "torch (checkpoint codec)",
    ("orchestrator.cli.controller_command", "orchestrator.control.service"): "Ray: the controller actor",
    ("orchestrator.cli.cost_commands", "orchestrator.forecast.prometheus"): "prometheus_client, numpy",
    ("orchestrator.cli.cost_commands", "orchestrator.forecast.alerts"): "numpy (the forecast's Monte Carlo)",
    ("orchestrator.cli.dashboard_command", "orchestrator.dashboard.app"): "FastAPI",
    ("orchestrator.cli.dashboard_command", "orchestrator.dashboard.context"): "FastAPI",
    ("orchestrator.cli.data_commands", "orchestrator.train.prepare"): "numpy (token shards)",
    ("orchestrator.cli.forecast_command", "orchestrator.forecast.alerts"): "numpy (the forecast's Monte Carlo)",
    ("orchestrator.cli.forecast_command", "orchestrator.forecast.report"): "numpy (the forecast's Monte Carlo)",
    ("orchestrator.cli.simulate_command", "orchestrator.simulate.sweep"): "numpy, Matplotlib (sweeps, charts)",
    ("orchestrator.control.client", "orchestrator.control.service"): "Ray: only when it connects",
    ("orchestrator.control.launcher", "orchestrator.control.runner"): "Ray: the runner is a Ray actor class",
    ("orchestrator.control.launcher", "orchestrator.train.peer_memory"): "Ray: the shard holder actor class",
    ("orchestrator.control.runner", "orchestrator.train.ray_worker"): "torch, only inside an attempt",
    ("orchestrator.k8s.entrypoint", "orchestrator.train.ray_worker"): "torch, after the arguments parse",
    ("orchestrator.k8s.entrypoint", "orchestrator.checkpoint.locate"): "torch (shard codec), after the args parse",
    ("orchestrator.k8s.entrypoint", "orchestrator.control.runner"): "Ray: the runner is a Ray actor class",
    ("orchestrator.train.ray_worker", "orchestrator.train.trainer"): "DeepSpeed: only in the Ray Train workers, "
    "not in the runner that starts them",
    ("orchestrator.train.ray_worker", "orchestrator.train.pipeline"): "DeepSpeed: only in the Ray Train workers",
    ("orchestrator.train.ray_worker", "orchestrator.train.peer_memory"): "Ray: the shard holder actor class",
    ("orchestrator.train.ray_worker", "orchestrator.train.controller_env"): "Ray Train: a Train controller "
    "callback, only where a run starts",
    ("orchestrator.train.warm_workers", "orchestrator.train.trainer"): "DeepSpeed: importing it in a warm worker "
    "before it is needed is the hook's job",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def component(module: str) -> str:
    """The layer unit of a module: its package under orchestrator/ (or the top-level module's name)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def resolve(name: str) -> str:
    """The orch module an import names (``from pkg import mod`` names ``pkg.mod``)."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


@lru_cache(maxsize=None)
def imports(module: str) -> tuple[tuple[str, int, bool, str], ...]:
    """(imported name, line, inside a function, third-party top-level package or '') for each import."""
    tree = ast.parse(MODULES[module].read_text())
    inner = {
        id(n)
        for f in ast.walk(tree)
        if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
        for n in ast.walk(f)
        if isinstance(n, (ast.Import, ast.ImportFrom))
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module for a in node.names
            ]
        else:
            continue
        for name in names:
            if name.split(".")[0] == "orchestrator":
                found.append((resolve(name), node.lineno, id(node) in inner, ""))
            else:
                found.append(("", node.lineno, id(node) in inner, name.split(".")[0]))
    return tuple(found)


def orch_edges(module: str, include_inner: bool = True) -> set[str]:
    return {name for name, _, inner, _ in imports(module) if name and name != module and (include_inner or not inner)}


def test_every_package_has_a_layer():
    assert {component(m) for m in MODULES} <= set(RANK), "add the new package to LAYERS and docs/architecture.md"


def test_imports_point_down():
    wrong = []
    for module in sorted(MODULES):
        for name, line, _, _ in imports(module):
            if not name:
                continue
            mine, theirs = component(module), component(name)
            if mine != theirs and RANK[theirs] >= RANK[mine]:
                wrong.append(
                    f"{MODULES[module].relative_to(ROOT)}:{line} imports {name} ({theirs} is not below {mine})"
                )
    assert not wrong, "imports that do not point down:\n" + "\n".join(wrong)


def test_no_import_cycles():
    """Tarjan's strongly connected components over all imports, those in functions included."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in orch_edges(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            members = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                members.append(w)
                if w == v:
                    break
            if len(members) > 1:
                cycles.append(" <-> ".join(sorted(members)))

    for module in sorted(MODULES):
        if module not in index:
            visit(module)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_package_inits_import_nothing():
    loud = [f"{m}: imports {n}" for m in MODULES if MODULES[m].name == "__init__.py" for n in orch_edges(m)]
    assert not loud, "\n".join(loud)


@lru_cache(maxsize=None)
def heavy_closure(module: str) -> frozenset[str]:
    """The heavy third-party packages importing ``module`` loads (module-level imports, transitively)."""
    seen, todo, heavy = set(), [module], set()
    while todo:
        m = todo.pop()
        if m in seen or m not in MODULES:
            continue
        seen.add(m)
        for name, _, inner, third in imports(m):
            if inner:
                continue
            if third in DEFERRED_PACKAGES:
                heavy.add(third)
            elif name:
                todo.append(name)
    return frozenset(heavy)


def test_in_function_imports_are_listed_with_a_reason():
    unlisted = []
    for module in sorted(MODULES):
        for name, line, inner, third in imports(module):
            if not inner or (module, name) in DEFERRED_MODULES or third in DEFERRED_PACKAGES:
                continue
            what = name or third
            unlisted.append(
                f"{MODULES[module].relative_to(ROOT)}:{line} imports {what} inside a function: import it "
                "at the top (or, if it defers a heavy dependency, list it with the reason)"
            )
    assert not unlisted, "\n".join(unlisted)


def test_deferred_modules_still_defer_something_heavy():
    """A listed import still exists, still inside a function, and still spares the importer a package."""
    inner = {(m, name) for m in MODULES for name, _, is_inner, _ in imports(m) if is_inner and name}
    stale = [
        f"{m} no longer imports {n} inside a function: strike it off"
        for m, n in DEFERRED_MODULES
        if (m, n) not in inner
    ]
    stale += [
        f"{m} -> {n}: {n} loads nothing of DEFERRED_PACKAGES that {m} does not: import it at the top"
        for m, n in DEFERRED_MODULES
        if (m, n) in inner and not heavy_closure(n) - heavy_closure(m)
    ]
    assert not stale, "\n".join(stale)


def test_cli_start_up_loads_no_deferred_package(tmp_path):
    """`orch --help` and `orch validate` (the commands run most) import none of the slow packages."""
    probe = (
        "import sys, contextlib, io\n"
        "from orchestrator.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    codes = [main(['validate', sys.argv[1]])]\n"
        "    try:\n"
        "        main(['--help'])\n"
        "    except SystemExit as e:\n"
        "        codes.append(e.code)\n"
        "print(codes, sorted({m.split('.')[0] for m in sys.modules} & set(sys.argv[2].split(','))))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ORCH_HOME": str(tmp_path)}
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            probe,
            str(ROOT / "tests" / "specs" / "good" / "minimal.yaml"),
            ",".join(DEFERRED_PACKAGES),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[0, 0] []", out.stdout
