"""The dashboard's gate: every request passes here before any route runs or any body byte is read.

Who may do what:

- ``/healthz`` answers anyone (it says ``ok`` and nothing else; the kubelet probes it by pod IP).
- Every other request must name one of our hosts in ``Host`` (the loopback names, the names given with
  ``--allow-host`` and the ``--public-url`` host): a DNS-rebinding page, whose requests carry the
  attacker's name, is refused with 421 before it can read anything.
- Pages and static files carry no data and need no token. The JSON API needs a token (a reader's or an
  operator's) whenever the dashboard listens beyond loopback.
- Anything but GET/HEAD is an action: same-origin (``Sec-Fetch-Site``; ``Origin`` equal to the public
  URL, or to what a trusted proxy forwarded, or to ``Host``), a JSON content type and an operator
  token, all checked from the headers alone, so an unauthenticated 300 MiB body is refused without
  reading a byte of it. A declared length over the limit is refused at once; a body sent without a
  length is counted as it arrives and cut off at the limit; a body that trickles in is cut off after
  ``body_timeout_s``.

Every response carries the Content-Security-Policy and the other headers that forbid framing and
sniffing.
"""

from __future__ import annotations

import asyncio
import time

from fastapi import HTTPException, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator.dashboard.context import DashboardContext, host_name
from orchestrator.dashboard.errors import error_bytes
from orchestrator.dashboard.tokens import TokenFileError, load_tokens, who

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]
SAFE_METHODS = ("GET", "HEAD")


class Refused(HTTPException):
    """A request the gate turns away; an ``HTTPException`` so FastAPI passes it through body parsing."""


class Guard:
    """Pure ASGI middleware (no body buffering, unlike ``@app.middleware('http')``)."""

    def __init__(self, app: ASGIApp, ctx: DashboardContext):
        self.app, self.ctx = app, ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        try:
            if scope["path"] != "/healthz":
                scope.setdefault("state", {})["identity"] = self.admit(scope)
            await self.app(scope, self.limited(scope, receive), send_with_headers)
        except Refused as exc:
            if started:  # the route already answered; nothing more can be said on this request
                return
            await self.refuse(send_with_headers, exc)

    # ------------------------------------------------------------------ checks on the headers alone

    def admit(self, scope: Scope) -> tuple[str, str] | None:
        """(name, role) of the presented token, or None; raises ``Refused`` for anything not let in."""
        headers = _headers(scope)
        host = headers.get("host", "")
        if host_name(host) not in self.ctx.allowed_hosts:
            raise Refused(
                421,
                f"Host {host[:100]!r} is not a name of this dashboard; allowed: "
                f"{', '.join(self.ctx.allowed_hosts)} (add names with --allow-host)",
            )
        identity = self.identify(headers.get("authorization"))
        if scope["method"] not in SAFE_METHODS:
            self.check_action(scope, headers, identity)
        elif self.ctx.read_token_required and _is_api(scope["path"]) and identity is None:
            raise Refused(
                401,
                "this dashboard listens beyond loopback: reading needs a token (Authorization: Bearer TOKEN)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return identity

    def identify(self, header: str | None) -> tuple[str, str] | None:
        if not header:
            return None
        if not header.startswith("Bearer ") or not header[7:].strip():
            raise Refused(
                401,
                "malformed Authorization header; send 'Authorization: Bearer TOKEN'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        presented = header[7:].strip()
        try:
            operators = load_tokens(self.ctx.tokens_file)
            readers = load_tokens(self.ctx.tokens_file, role="reader")
        except TokenFileError as exc:
            raise Refused(503, f"the token file cannot be used: {exc}") from None
        name = who(operators, presented)
        if name is not None:
            return name, "operator"
        name = who(readers, presented)
        if name is None:
            raise Refused(403, "unknown token")
        return name, "reader"

    def check_action(self, scope: Scope, headers: dict[str, str], identity: tuple[str, str] | None) -> None:
        site = headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            raise Refused(403, f"cross-site request refused (Sec-Fetch-Site: {site[:40]})")
        origin = headers.get("origin")
        if origin is not None and origin != self.expected_origin(scope, headers):
            raise Refused(403, f"cross-site request refused (Origin: {origin[:100]})")
        if not headers.get("content-type", "").startswith("application/json"):
            raise Refused(415, "actions take a JSON body (Content-Type: application/json)")
        if identity is None:
            raise Refused(
                401,
                "this action needs an operator token: Authorization: Bearer TOKEN "
                f"(tokens are in {self.ctx.tokens_file})",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if identity[1] != "operator":
            raise Refused(403, f"'{identity[0]}' holds a read-only token")
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.ctx.max_body_bytes):
            raise Refused(
                413, f"a request body may hold at most {self.ctx.max_body_bytes} bytes (Content-Length: {length[:20]})"
            )

    def expected_origin(self, scope: Scope, headers: dict[str, str]) -> str:
        """The origin a same-site browser sends: the public URL, a trusted proxy's forwarded one, or Host's."""
        if self.ctx.public_url:
            return self.ctx.public_url
        client = (scope.get("client") or ("", 0))[0]
        if client in self.ctx.trusted_proxies and headers.get("x-forwarded-host"):
            proto = headers.get("x-forwarded-proto", scope.get("scheme", "http")).split(",")[0].strip()
            return f"{proto}://{headers['x-forwarded-host'].split(',')[0].strip()}"
        return f"{scope.get('scheme', 'http')}://{headers.get('host', '')}"

    # ------------------------------------------------------------------ the body, as it arrives

    def limited(self, scope: Scope, receive: Receive) -> Receive:
        """``receive`` that refuses a body past the size limit or past the time limit."""
        limit, timeout = self.ctx.max_body_bytes, self.ctx.body_timeout_s
        state = {
            "bytes": 0,
            "done": scope["method"] in SAFE_METHODS and not _declares_body(scope),
            "deadline": time.monotonic() + timeout,
        }

        async def receive_limited() -> Message:
            if state["done"]:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(state["deadline"] - time.monotonic(), 0.001))
            except asyncio.TimeoutError:
                raise Refused(408, f"the request body did not arrive within {timeout:g} s") from None
            if message["type"] == "http.request":
                state["bytes"] += len(message.get("body", b""))
                if state["bytes"] > limit:
                    raise Refused(413, f"a request body may hold at most {limit} bytes")
                state["done"] = not message.get("more_body", False)
            return message

        return receive_limited

    @staticmethod
    async def refuse(send: Send, exc: Refused) -> None:
        body = error_bytes(exc.status_code, exc.detail)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        headers += [(k.lower().encode(), v.encode()) for k, v in (exc.headers or {}).items()]
        await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _is_api(path: str) -> bool:
    return path.startswith("/api/") or path == "/api" or path == "/openapi.json"


def _declares_body(scope: Scope) -> bool:
    return any(k.lower() in (b"content-length", b"transfer-encoding") for k, _ in scope.get("headers", []))


def operator(request: Request) -> str:
    """FastAPI dependency: the acting operator as the event log names them (``dashboard:NAME@ADDRESS``).

    The gate has already refused every action without a good operator token; a GET route that needs
    an operator (``/api/whoami``) is refused here."""
    identity = request.scope.get("state", {}).get("identity")
    if identity is None:
        raise HTTPException(
            401, "this needs an operator token: Authorization: Bearer TOKEN", headers={"WWW-Authenticate": "Bearer"}
        )
    if identity[1] != "operator":
        raise HTTPException(403, f"'{identity[0]}' holds a read-only token")
    client = request.client.host if request.client else "unknown"
    return f"dashboard:{identity[0]}@{client}"
