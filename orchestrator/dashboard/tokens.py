"""Operator tokens for the dashboard's actions.

A token file holds one ``NAME TOKEN`` pair per line (``#`` comments allowed): ``ORCH_HOME/dashboard-tokens``
by default, created with one ``admin`` token and mode 0600 on first use; on Kubernetes, a Secret
mounted as a file and named by ``ORCH_DASHBOARD_TOKENS``. The name is who the event log says acted.
Tokens are compared in constant time.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from orchestrator.errors import OrchError


class TokenFileError(OrchError):
    pass


def tokens_path(home: Path) -> Path:
    return Path(os.environ.get("ORCH_DASHBOARD_TOKENS") or home / "dashboard-tokens")


def ensure_tokens(path: Path) -> str | None:
    """Create the file with an ``admin`` token if there is none; the new token, or None if it existed."""
    if path.exists():
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("# orch dashboard operator tokens: NAME TOKEN per line\n")
        handle.write(f"admin {token}\n")
    return token


def load_tokens(path: Path) -> dict[str, str]:
    """name -> token."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise TokenFileError(f"cannot read the dashboard token file {path}: {exc.strerror}") from None
    tokens = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[1]) < 16:
            raise TokenFileError(f"{path}:{number}: expected 'NAME TOKEN' with a token of 16+ characters")
        tokens[parts[0]] = parts[1]
    return tokens


def who(tokens: dict[str, str], presented: str) -> str | None:
    """The name whose token was presented, or None."""
    found = None
    for name, token in tokens.items():
        if hmac.compare_digest(token.encode(), presented.encode()):
            found = name
    return found
