"""Files and folders only their owner may read: ORCH_HOME (0700), the state database and logs (0600).

ORCH_HOME holds the cluster's auth token, the dashboard's operator tokens, the state database (every
job's spec and event) and the job logs; on a shared machine none of it is for other users. Folders
are created 0700 and files 0600 from the start (never created open and narrowed later), and a folder
or file orch owns that was left open by an older version is narrowed when orch next opens it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import IO

DIR_MODE, FILE_MODE = 0o700, 0o600


def private_dir(path: Path) -> Path:
    """``path`` (and missing parents) created 0700; an existing one we own narrowed to 0700."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    _narrow(path, DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """``path`` created empty with mode 0600 if missing; an existing one we own narrowed to 0600."""
    path = Path(path)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    except FileExistsError:
        _narrow(path, FILE_MODE)
    return path


def open_private(path: Path, mode: str = "a", buffering: int = -1) -> IO[str]:
    """A text file opened for appending or writing, created 0600."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode.startswith("a") else os.O_TRUNC)
    handle = os.fdopen(os.open(path, flags, FILE_MODE), mode, buffering=buffering)
    _narrow(Path(path), FILE_MODE)
    return handle


def _narrow(path: Path, wanted: int) -> None:
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    if info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) & ~wanted:
        path.chmod(stat.S_IMODE(info.st_mode) & wanted)
