"""Interruption notices as data: how long each cloud warns before it takes a node, and by which
taint or event it says so (``notice_windows.yaml``). What orch does on a notice is control-plane
work, in ``control/notices.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

WINDOWS_FILE = Path(__file__).with_name("notice_windows.yaml")
NOTICE_CORDON_PREFIX = "notice:"  # how a notice's cordon reason reads (the deadline itself is a column)


@dataclass(frozen=True)
class Signal:
    kind: str  # interruption | rebalance | maintenance
    taint: str | None = None
    event_reason: str | None = None


@dataclass(frozen=True)
class ProviderNotices:
    provider: str
    notice_seconds: int
    signals: tuple[Signal, ...]


@lru_cache(maxsize=1)
def notice_windows() -> dict[str, ProviderNotices]:
    data = yaml.safe_load(WINDOWS_FILE.read_text())
    return {
        name: ProviderNotices(name, int(entry["notice_seconds"]), tuple(Signal(**s) for s in entry["signals"]))
        for name, entry in data.items()
    }


def notice_seconds(provider: str) -> int:
    try:
        return notice_windows()[provider].notice_seconds
    except KeyError:
        raise KeyError(f"no notice window for provider '{provider}'; known: {', '.join(notice_windows())}") from None
