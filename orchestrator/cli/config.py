"""``ORCH_HOME/config.yaml``: a user's defaults for flags they would otherwise repeat.

    profile: local            # --profile of every command that reads a spec
    address: ray://head:10001 # --address (a running Ray cluster)
    state_url: postgresql://… # the state store (ORCH_STATE_URL)

A flag beats the environment, which beats the file. An unknown key or a value of the wrong type is
an error naming the file, the key and the fix (exit 2), never ignored.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import yaml

from orchestrator.errors import FieldProblem, ProblemListError


class ConfigError(ProblemListError):
    """ORCH_HOME/config.yaml cannot be used."""

    title = "invalid config file"


KEYS = {
    "profile": "--profile of commands that read a spec",
    "address": "--address: a running Ray cluster",
    "state_url": "the state store URL (as ORCH_STATE_URL)",
}


def config_path(home: Path) -> Path:
    return home / "config.yaml"


def load_config(home: Path) -> dict:
    path = config_path(home)
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        problem = FieldProblem("<file>", f"not valid YAML: {exc}", fix="fix the YAML syntax")
        raise ConfigError([problem], str(path)) from None
    if not isinstance(data, dict):
        raise ConfigError(
            [FieldProblem("<file>", "must be a mapping of key: value", data, fix=f"keys: {', '.join(KEYS)}")], str(path)
        )
    problems = [FieldProblem(k, "unknown key", fix=f"use one of: {', '.join(KEYS)}") for k in data if k not in KEYS]
    problems += [
        FieldProblem(k, "must be a string", v, fix=f'{k}: "..."')
        for k, v in data.items()
        if k in KEYS and not isinstance(v, str)
    ]
    if problems:
        raise ConfigError(problems, str(path))
    return data


def apply_config(args: argparse.Namespace, home: Path) -> None:
    """Fill flags the user did not give from the config file (the environment still wins)."""
    config = load_config(home)
    if not config:
        return
    if "state_url" in config:
        os.environ.setdefault("ORCH_STATE_URL", config["state_url"])
    if "profile" in config and hasattr(args, "profile") and args.profile is None:
        args.profile = config["profile"]
    if "address" in config and hasattr(args, "address") and args.address is None and not os.environ.get("RAY_ADDRESS"):
        args.address = config["address"]
