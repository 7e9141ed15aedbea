"""A real S3 HTTP endpoint for tests: moto's server on a free loopback port."""

from __future__ import annotations

import socket
from contextlib import contextmanager


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def s3_server():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def s3_env(endpoint: str) -> dict:
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }


@contextmanager
def s3_server_in_environment():
    """A moto S3 server whose endpoint and credentials are in ``os.environ`` while it runs (as boto3
    finds them in a job's pods); the variables are put back as they were afterwards."""
    import os

    with s3_server() as endpoint:
        saved = {k: os.environ.get(k) for k in s3_env(endpoint)}
        os.environ.update(s3_env(endpoint))
        try:
            yield endpoint
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
