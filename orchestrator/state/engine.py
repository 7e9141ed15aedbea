"""Connections to the state database: engine options, retries across a server restart, redaction.

The control plane must ride out a PostgreSQL restart or fail-over (connections dropped, the server
refusing connections for a few seconds): every state-store call is retried with exponential
backoff while the failure is a lost connection, for up to ``ORCH_STATE_RETRY_S`` seconds. A query
that exceeds the statement timeout (``ORCH_STATE_STATEMENT_TIMEOUT_MS``, e.g. behind a lock someone
holds) is *not* retried: it raises ``StateStoreTimeout`` so the caller sees it instead of hanging.
Credentials never reach a message: URLs are shown with the password replaced by ``***``.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import create_engine
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from orchestrator.errors import OrchError

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_RETRY_S = 60.0
DEFAULT_STATEMENT_TIMEOUT_MS = 30_000
CONNECT_TIMEOUT_S = 10
# SQLSTATEs of a lost or refused connection (class 08) and of a server going down or starting up
# (57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now). 57014 (query_canceled, a
# statement timeout) and 55P03 (lock_not_available, a lock timeout) are timeouts, not outages.
_DISCONNECT_STATES = {"57P01", "57P02", "57P03"}
_TIMEOUT_STATES = {"57014", "55P03"}


class StateStoreUnavailable(OrchError):
    """The state database could not be reached for longer than the retry budget."""


class StateStoreTimeout(OrchError):
    """A statement ran past the statement (or lock) timeout."""


def redact(url: str) -> str:
    """The URL with its password replaced by ``***`` (what every message and log line shows)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable state URL>"


def statement_timeout_ms() -> int:
    return int(os.environ.get("ORCH_STATE_STATEMENT_TIMEOUT_MS", DEFAULT_STATEMENT_TIMEOUT_MS))


def retry_budget_s() -> float:
    return float(os.environ.get("ORCH_STATE_RETRY_S", DEFAULT_RETRY_S))


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``; PostgreSQL connections carry the statement and lock timeouts and are
    checked before use (a connection left from before a server restart is replaced, not used)."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":  # psycopg (3) is the driver orch installs, not psycopg2
        url = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "postgresql":
        timeout = statement_timeout_ms()
        kwargs.setdefault("pool_pre_ping", True)
        kwargs.setdefault(
            "connect_args",
            {
                "connect_timeout": CONNECT_TIMEOUT_S,
                "options": f"-c statement_timeout={timeout} -c lock_timeout={timeout}",
            },
        )
    return create_engine(url, future=True, **kwargs)


def _sqlstate(exc: DBAPIError) -> str | None:
    orig = exc.orig
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


def is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, DBAPIError) and _sqlstate(exc) in _TIMEOUT_STATES


def is_disconnect(exc: BaseException) -> bool:
    """Whether ``exc`` means the connection was lost or refused (worth retrying on a new one)."""
    if not isinstance(exc, DBAPIError) or is_timeout(exc):
        return False
    if exc.connection_invalidated:
        return True
    state = _sqlstate(exc)
    if state is not None:
        return state.startswith("08") or state in _DISCONNECT_STATES
    # psycopg raises a bare OperationalError without a SQLSTATE when it cannot connect at all
    module = type(exc.orig).__module__ or ""
    return module.startswith("psycopg") and type(exc.orig).__name__ == "OperationalError"


def _first_line(exc: DBAPIError) -> str:
    return (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0][:300]


def call_with_retry(url: str, fn: Callable[[], Any], what: str = "state store call") -> Any:
    """Run ``fn``; on a lost connection, run it again with exponential backoff (0.05 s doubling to
    2 s, with jitter) until the retry budget is spent. ``fn`` must be safe to run again: each of the
    store's calls is one transaction, rolled back when its connection dropped before the commit."""
    deadline = time.monotonic() + retry_budget_s()
    delay, tries = 0.05, 0
    while True:
        try:
            return fn()
        except DBAPIError as exc:
            if is_timeout(exc):
                raise StateStoreTimeout(
                    f"{what} on {redact(url)} timed out after {statement_timeout_ms()} ms "
                    f"({_first_line(exc)}); something holds a lock or the database is "
                    "overloaded; raise ORCH_STATE_STATEMENT_TIMEOUT_MS if it is slow"
                ) from None
            if not is_disconnect(exc):
                raise
            tries += 1
            if time.monotonic() + delay > deadline:
                raise StateStoreUnavailable(
                    f"the state store {redact(url)} is unreachable ({_first_line(exc)}); gave up after {tries} "
                    f"tries in {retry_budget_s():.0f} s; check that the database runs and ORCH_STATE_URL "
                    "points at it"
                ) from None
            log.warning(
                "state store %s: connection lost (%s); retry %d in %.2f s", redact(url), _first_line(exc), tries, delay
            )
            time.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, 2.0)


def retrying(method: F) -> F:
    """Decorate a method of an object with ``.url``: each call is retried across a lost connection."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        return call_with_retry(self.url, lambda: method(self, *args, **kwargs), method.__name__)

    wrapper.__retrying__ = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def retry_public_methods(cls: type) -> type:
    """Class decorator: every public method (not static/class methods, not ones marked already)
    goes through ``call_with_retry``; methods that manage their own retries set ``__retrying__``."""
    for name, value in list(vars(cls).items()):
        if name.startswith("_") or not callable(value) or getattr(value, "__retrying__", False):
            continue
        if isinstance(value, (staticmethod, classmethod, type)):
            continue
        setattr(cls, name, retrying(value))
    return cls


def own_retries(method: F) -> F:
    """Mark a method that calls ``call_with_retry`` itself (so the class decorator leaves it alone)."""
    method.__retrying__ = True  # type: ignore[attr-defined]
    return method
