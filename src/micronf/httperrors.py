"""The error side of micronf's HTTP APIs (the agent's southbound and the orchestrator's northbound).

Both APIs answer every failure with one JSON shape, ``{"error": kind, "detail": message}``
(:class:`~micronf.agent.models.ErrorReply`), so a client never parses FastAPI's or Starlette's
defaults and never sees a traceback. This module holds what makes that so, shared by both apps:

- :class:`ApiError`: the base of every exception a core (agent or orchestrator) raises to a
  client; its ``kind`` and ``status`` become the reply;
- :func:`install_error_handlers`: maps ApiError, request validation errors (422, or 400 for a body
  that is not JSON), unknown routes/methods and bugs (500) to that shape;
- :func:`error_responses`: the OpenAPI ``responses`` entries of a route's error statuses.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from micronf.agent.models import ErrorReply

log = logging.getLogger(__name__)


class ApiError(Exception):
    """Base of every error reported to an API client: ``kind`` (machine-readable) and HTTP ``status``."""

    kind = "error"
    status = 500


class ValidationErrorReply(ErrorReply):
    """A 422 reply: ``detail`` names every bad field; ``errors`` is pydantic's raw list."""

    errors: list[dict[str, Any]]


def error_responses(descriptions: Mapping[int, str], *statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the error statuses a route can return (``descriptions``:
    what each status means in this API)."""
    return {s: {"model": ValidationErrorReply if s == 422 else ErrorReply, "description": descriptions[s]}
            for s in statuses}


def _field_path(loc: Sequence[int | str]) -> str:
    """``("body", "graph", "nodes", 1, "type")`` -> ``graph.nodes[1].type`` (the body is implied)."""
    parts = list(loc[1:] if loc and loc[0] == "body" else loc)
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "body"


def describe_validation_errors(errors: Sequence[Any]) -> str:
    """One line per pydantic error, ``field.path: problem``, joined with ``; ``."""
    lines = []
    for e in errors:
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        lines.append(f"{_field_path(e.get('loc', ()))}: {msg}")
    return "; ".join(lines)


def error_reply(status: int, kind: str, detail: str, **extra: Any) -> JSONResponse:
    """An :class:`ErrorReply` response (``extra`` adds fields, e.g. ``errors`` of a 422)."""
    return JSONResponse({"error": kind, "detail": detail, **extra}, status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    """Make every failure an :class:`ErrorReply`; client mistakes are 4xx, never a traceback."""

    @app.exception_handler(ApiError)
    async def _api_error(_req: Request, exc: ApiError) -> JSONResponse:
        return error_reply(exc.status, exc.kind, str(exc) or exc.kind)

    @app.exception_handler(RequestValidationError)
    async def _invalid(req: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        bad_json = [e for e in errors if e.get("type") == "json_invalid"]
        if bad_json:
            e = bad_json[0]
            why = (e.get("ctx") or {}).get("error", "cannot be decoded")
            pos = e["loc"][-1] if len(e.get("loc", ())) > 1 else "?"
            return error_reply(400, "bad_json", f"request body is not valid JSON: {why} (at character {pos})")
        detail = describe_validation_errors(errors)
        content_type = req.headers.get("content-type", "")
        if content_type and "json" not in content_type:  # FastAPI then validates the raw bytes
            detail += f" (the body was sent as {content_type!r}: send JSON with Content-Type: application/json)"
        return error_reply(422, "invalid_request", detail, errors=jsonable_encoder(errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http(req: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return error_reply(404, "no_route", f"no route {req.method} {req.url.path} (see /openapi.json)")
        if exc.status_code == 405:
            return error_reply(405, "method_not_allowed", f"{req.method} is not allowed on {req.url.path}")
        return error_reply(exc.status_code, "http_error", str(exc.detail))

    @app.exception_handler(Exception)
    async def _bug(req: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", req.method, req.url.path)
        return error_reply(500, "internal", f"{type(exc).__name__}: {exc}")
