"""Serve a dashboard app on a free loopback port in a background thread (a real HTTP server)."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

import httpx
import uvicorn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(app):
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("the dashboard server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def wait_until_serving(base: str, server, timeout: float = 60.0) -> None:
    """Poll ``base``/healthz until an `orch dashboard` process (``server``, a Popen) answers "ok"."""
    deadline = time.time() + timeout
    while True:
        try:
            if httpx.get(base + "/healthz", timeout=2).text == "ok":
                return
        except httpx.HTTPError:
            pass
        assert time.time() < deadline and server.poll() is None, "the dashboard did not start"
        time.sleep(0.2)
