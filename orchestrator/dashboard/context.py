"""What the dashboard's routers and its security middleware share: the state, the cluster, and the
trust settings (which Host names are ours, which origin actions come from, who must show a token)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from fastapi import HTTPException, Request

from orchestrator.cluster.provider import NodeProvider
from orchestrator.errors import OrchError
from orchestrator.state.store import StateStore

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
MAX_BODY_BYTES = 64 * 1024  # every action body is a few fields of JSON
BODY_TIMEOUT_S = 10.0  # a body that has not arrived whole by then is a slow-body attack, not a client


class DashboardConfigError(OrchError):
    """A dashboard setting (a public URL, an allowed host name, a proxy address) that cannot be used."""


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``: addresses no other machine can reach."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def parse_public_url(url: str | None) -> str | None:
    """``https://orch.example.com[:port]`` -> its origin (scheme://host[:port]); nothing else is accepted."""
    if not url:
        return None
    parts = urlsplit(url)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.username
        or parts.password
        or parts.query
        or parts.fragment
        or parts.path not in ("", "/")
    ):
        raise DashboardConfigError(
            f"--public-url {url[:200]!r}: expected an origin such as "
            "https://orch.example.com (scheme, host and optional port; no path or user)"
        )
    return f"{parts.scheme}://{parts.netloc.lower()}"


def host_name(value: str) -> str:
    """The name part of a Host header value (``[::1]:8267`` -> ``::1``, ``a.b:80`` -> ``a.b``), lowercased."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


@dataclass
class DashboardContext:
    store: StateStore
    provider: NodeProvider | None  # None: the cluster is not reachable (node pages say so)
    tokens_file: Path
    home: Path
    cluster: object | None = None  # the embedded cluster, for the preemption drill
    ask_runner: Callable[[dict, str, float], None] | None = None
    allowed_hosts: tuple[str, ...] = ()  # beyond the loopback names; the public URL's host is added
    public_url: str | None = None  # the origin browsers use (behind a TLS ingress: https://...)
    trusted_proxies: tuple[str, ...] = ()  # addresses whose X-Forwarded-Host/-Proto are believed
    read_token_required: bool = False  # True whenever the dashboard listens beyond loopback
    max_body_bytes: int = MAX_BODY_BYTES
    body_timeout_s: float = BODY_TIMEOUT_S
    verify_slots: int = 1  # checkpoint verifications running at once (each streams every shard)
    tasks: object = field(default=None)  # the verify task board, made by create_app

    def __post_init__(self) -> None:
        self.public_url = parse_public_url(self.public_url)
        names = {h.lower() for h in self.allowed_hosts} | set(LOOPBACK_NAMES)
        if self.public_url:
            names.add(host_name(urlsplit(self.public_url).netloc))
        self.allowed_hosts = tuple(sorted(names))


def context(request: Request) -> DashboardContext:
    """FastAPI dependency: the context create_app put on the application."""
    return request.app.state.ctx


def provider(request: Request) -> NodeProvider:
    """FastAPI dependency: the node provider, or 503 when the cluster is not reachable."""
    return require_provider(context(request))


def require_provider(ctx: DashboardContext) -> NodeProvider:
    if ctx.provider is None:
        raise HTTPException(503, "the cluster is not reachable from the dashboard; start it with 'orch up'")
    return ctx.provider
