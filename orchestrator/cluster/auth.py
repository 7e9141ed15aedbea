"""Ray token authentication for orch's processes.

Ray reads ``RAY_AUTH_MODE`` and the token when ``ray`` is imported, so every orch entry point calls
``prime_auth_env`` before anything imports Ray. The embedded cluster's token is a random secret in
``ORCH_HOME/ray_auth_token`` (mode 0600); a remote cluster's token comes from the environment
(``RAY_AUTH_TOKEN`` or ``RAY_AUTH_TOKEN_PATH``), which is left alone.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

TOKEN_FILE = "ray_auth_token"


def token_path(home: Path) -> Path:
    return Path(home) / TOKEN_FILE


def ensure_token(home: Path) -> Path:
    path = token_path(home)
    if not path.exists() or not path.read_text().strip():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    path.chmod(0o600)
    return path


def prime_auth_env(home: Path, create: bool = False) -> None:
    """Point Ray at the embedded cluster's token (creating it if asked); a no-op when the
    environment already names a token."""
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return
    path = ensure_token(home) if create else token_path(home)
    if path.exists():
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(path)


def cluster_token_path(home: Path) -> Path:
    """The token a new embedded cluster uses: the one the environment names, else ORCH_HOME's."""
    named = os.environ.get("RAY_AUTH_TOKEN_PATH")
    return Path(named) if named else ensure_token(home)
