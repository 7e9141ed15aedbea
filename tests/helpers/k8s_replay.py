"""A local HTTP server that answers like a Kubernetes API server from a script of responses.

Each rule matches a method and a path (a regular expression over the path, query excluded) and
answers with a status and a JSON body, once or every time; a watch rule answers with a stream of
JSON lines (``{"type": "ADDED"|"MODIFIED"|"DELETED", "object": ...}``) the way the API server's
chunked watch responses do. Every request is recorded (method, path, query, JSON body) so tests can
assert what the client sent. The kubernetes client is pointed at it with a ``Configuration`` whose
host is this server's address.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Rule:
    method: str
    path: str  # regular expression, matched in full against the path
    status: int = 200
    body: object = None
    stream: list[dict] | None = None  # a watch: JSON lines
    times: int | None = None  # None: every time
    query: dict | None = None  # these query parameters must be present with these values
    hold_s: float = 0.0  # a watch: keep the stream open this long after its lines (chunked, as the API server)
    used: int = 0


@dataclass
class Request:
    method: str
    path: str
    query: dict
    body: object
    headers: dict = field(default_factory=dict)  # lower-case names
    caller: str = ""  # whose credentials the request stands for (ReplayServer.caller when it was made)


def status_body(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    """A ``Status`` object as the API server returns with errors."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details or {},
        "code": code,
    }


class ReplayServer:
    """``caller`` and ``traffic`` (class-wide) let the RBAC test replay other tests' flows under a
    service account's name and check every request they made against the roles bound to it."""

    caller = ""
    traffic: list[Request] = []

    def __init__(self):
        self.rules: list[Rule] = []
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.open_streams: dict[str, int] = {}  # path -> watch responses still open
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args):
                pass

            def _handle(self):
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                with server.lock:
                    request = Request(
                        self.command,
                        parts.path,
                        parse_qs(parts.query),
                        body,
                        {k.lower(): v for k, v in self.headers.items()},
                        ReplayServer.caller,
                    )
                    server.requests.append(request)
                    ReplayServer.traffic.append(request)
                    rule = server._match(self.command, parts.path, parse_qs(parts.query))
                if rule is None:
                    return self._json(
                        404, status_body(404, "NotFound", f"no replayed response for {self.command} {parts.path}")
                    )
                if rule.stream is not None and rule.hold_s:
                    return self._held_stream(parts.path, rule)
                if rule.stream is not None:
                    payload = b"".join(json.dumps(e).encode() + b"\n" for e in rule.stream)
                    self.send_response(rule.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return None
                return self._json(rule.status, rule.body)

            def _held_stream(self, path, rule):
                self.send_response(rule.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                with server.lock:
                    server.open_streams[path] = server.open_streams.get(path, 0) + 1
                try:
                    for event in rule.stream:
                        line = json.dumps(event).encode() + b"\n"
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                        self.wfile.flush()
                    time.sleep(rule.hold_s)
                    self.wfile.write(b"0\r\n\r\n")
                finally:
                    with server.lock:
                        server.open_streams[path] -= 1

            def _json(self, status, body):
                payload = json.dumps(body if body is not None else {}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def _match(self, method: str, path: str, query: dict) -> Rule | None:
        for rule in self.rules:
            if rule.query and any(query.get(k, [None])[0] != v for k, v in rule.query.items()):
                continue
            if (
                rule.method == method
                and re.fullmatch(rule.path, path)
                and (rule.times is None or rule.used < rule.times)
            ):
                rule.used += 1
                return rule
        return None

    def on(
        self,
        method: str,
        path: str,
        status: int = 200,
        body: object = None,
        stream: list[dict] | None = None,
        times: int | None = None,
        query: dict | None = None,
        hold_s: float = 0.0,
    ) -> "ReplayServer":
        self.rules.append(Rule(method, path, status, body, stream, times, query, hold_s))
        return self

    def sent(self, method: str, path_pattern: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and re.fullmatch(path_pattern, r.path)]

    def api_client(self):
        from kubernetes import client

        config = client.Configuration()
        config.host = self.url
        config.api_key = {"authorization": "replay-token"}
        config.api_key_prefix = {"authorization": "Bearer"}
        return client.ApiClient(config)

    def __enter__(self) -> "ReplayServer":
        self.thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
