"""Refuse secrets that are still placeholders: a long-running process started with a token such as
``REPLACE-with-output-of-openssl-rand-hex-32`` would accept it as real (anyone who read the example
could use it). The controller and the dashboard call ``refuse_placeholders`` before they serve."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from orchestrator.errors import OrchError

PLACEHOLDER = re.compile(r"replace|changeme|change-me|placeholder|example|<[^>]*>|\bxxx+\b|\btodo\b", re.IGNORECASE)
SECRET_ENV = ("RAY_AUTH_TOKEN", "ORCH_STATE_URL")
MIN_TOKEN_CHARS = 16


class PlaceholderSecret(OrchError):
    """A secret still holds an example value."""


def placeholder_problem(name: str, value: str) -> str | None:
    """Why ``value`` cannot be a real secret, or None (of a URL, only its password is the secret)."""
    if "://" in value:
        value = urlsplit(value).password or ""
    if PLACEHOLDER.search(value):
        return f"{name} still holds a placeholder ({PLACEHOLDER.search(value).group(0)!r})"
    if name.endswith("TOKEN") and len(value.strip()) < MIN_TOKEN_CHARS:
        return f"{name} is {len(value.strip())} characters; a token needs at least {MIN_TOKEN_CHARS}"
    return None


def refuse_placeholders(
    env: dict[str, str] | None = None, names: tuple[str, ...] = SECRET_ENV, files: tuple[Path, ...] = ()
) -> None:
    """Raise ``PlaceholderSecret`` naming every set variable or file that is still a placeholder."""
    env = os.environ if env is None else env
    problems = [p for n in names if env.get(n) for p in [placeholder_problem(n, env[n])] if p]
    for path in files:
        if Path(path).exists():
            for number, line in enumerate(Path(path).read_text().splitlines(), 1):
                if line.strip() and not line.lstrip().startswith("#") and PLACEHOLDER.search(line):
                    problems.append(f"{path}:{number} still holds a placeholder")
    if problems:
        raise PlaceholderSecret(
            "; ".join(problems) + ". Create the Secrets with real values (docs/kubernetes.md, "
            "'Secrets': openssl rand -hex 32) and restart"
        )
