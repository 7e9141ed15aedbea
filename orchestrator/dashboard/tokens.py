"""Operator tokens for the dashboard's actions.

A token file holds one ``NAME TOKEN [ROLE]`` entry per line (``#`` comments allowed): ``ORCH_HOME/dashboard-tokens``
by default, created with one ``admin`` token and mode 0600 on first use; on Kubernetes, a Secret
mounted as a file and named by ``ORCH_DASHBOARD_TOKENS``. The name is who the event log says acted.
ROLE is ``operator`` (the default: reads and actions) or ``reader`` (reads only, for a dashboard that
listens beyond loopback). A file that its group or others may read is refused: a token anyone on the
machine can read is no secret (group-readable is accepted on a read-only mount such as a Kubernetes
Secret volume, whose group is the pod's). Tokens are compared in constant time.
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


ROLES = ("operator", "reader")


def _platform_managed(path: Path) -> bool:
    """On a read-only mount (a Kubernetes Secret volume, where an fsGroup makes files 0440 for the pod's
    group): the platform, not a careless chmod, decided who may read it."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def load_tokens(path: Path, role: str = "operator") -> dict[str, str]:
    """name -> token, of the operators (``role="operator"``) or of everyone who may read (``"reader"``)."""
    try:
        mode = path.stat().st_mode
        if mode & 0o007 or (mode & 0o070 and not _platform_managed(path)):
            raise TokenFileError(
                f"the dashboard token file {path} is readable by others (mode {mode & 0o777:o}); "
                f"make it private: chmod 600 {path}"
            )
        if path.stat().st_size > 1_000_000:
            raise TokenFileError(f"the dashboard token file {path} is over 1 MB; it holds NAME TOKEN lines")
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise TokenFileError(f"cannot read the dashboard token file {path}: {exc.strerror}") from None
    tokens = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) not in (2, 3) or len(parts[1]) < 16 or (len(parts) == 3 and parts[2] not in ROLES):
            raise TokenFileError(
                f"{path}:{number}: expected 'NAME TOKEN [operator|reader]' with a token of 16+ characters"
            )
        if role == "reader" or (parts[2] if len(parts) == 3 else "operator") == "operator":
            tokens[parts[0]] = parts[1]
    return tokens


def who(tokens: dict[str, str], presented: str) -> str | None:
    """The name whose token was presented, or None."""
    found = None
    for name, token in tokens.items():
        if hmac.compare_digest(token.encode(), presented.encode()):
            found = name
    return found
