"""One JSON shape for every refusal: ``{"status": 404, "error": "not_found", "detail": "..."}``.

The middleware (which refuses before any route runs) and the exception handlers (which refuse from
inside a route) both answer through :func:`error_response`, so a client parses one shape for every
4xx. ``detail`` is always a short string: a refused value is never echoed back at length.
"""

from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from orchestrator.control.node_ops import UnknownNode
from orchestrator.errors import OrchError
from orchestrator.state.store import JobNotFound

CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    411: "length_required",
    413: "payload_too_large",
    415: "unsupported_media_type",
    421: "misdirected_request",
    422: "invalid_input",
    429: "too_many_requests",
    501: "not_implemented",
    503: "unavailable",
}
MAX_DETAIL = 300


def clip(text: str, limit: int = MAX_DETAIL) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


def error_payload(status: int, detail: str) -> dict:
    return {"status": status, "error": CODES.get(status, "error"), "detail": clip(str(detail))}


def error_bytes(status: int, detail: str) -> bytes:
    return json.dumps(error_payload(status, detail)).encode()


def error_response(status: int, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_payload(status, detail), status_code=status, headers=headers)


def _validation_detail(exc: RequestValidationError) -> str:
    """``body.notice: Input should be less than or equal to 600`` for the first few problems; no input echoed."""
    parts = []
    for problem in exc.errors()[:5]:
        where = ".".join(str(p) for p in problem.get("loc", ()))
        parts.append(f"{where}: {problem.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    """Every refusal in the one shape; what a route raises as an ``OrchError`` is a 409 (a refused action)."""

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, exc.detail, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError):
        return error_response(422, _validation_detail(exc))

    @app.exception_handler(JobNotFound)
    async def _missing_job(_request: Request, exc: JobNotFound):
        return error_response(404, str(exc))

    @app.exception_handler(UnknownNode)
    async def _missing_node(_request: Request, exc: UnknownNode):
        return error_response(404, str(exc))

    @app.exception_handler(OrchError)
    async def _refused(_request: Request, exc: OrchError):
        return error_response(409, str(exc))
