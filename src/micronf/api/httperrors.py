"""The error side of micronf's HTTP APIs (the agent's southbound and the orchestrator's northbound).

Both APIs answer every failure with one JSON shape, ``{"error": kind, "detail": message}``
(:class:`~micronf.api.models.ErrorReply`), so a client never parses FastAPI's or Starlette's
defaults and never sees a traceback. This module holds what makes that so, shared by both apps:

- :class:`ApiError`: the base of every exception a core (agent or orchestrator) raises to a
  client; its ``kind`` and ``status`` become the reply;
- :func:`install_error_handlers`: maps ApiError, request validation errors (422, or 400 for a body
  that is not JSON), unknown routes/methods and bugs (500) to that shape;
- :func:`error_responses`: the OpenAPI ``responses`` entries of a route's error statuses;
- :func:`json_body`: a request body parsed and validated in a worker thread (FastAPI's own body
  handling decodes and validates on the event loop, where a large graph would stall every other
  request, ``/health`` included), and :func:`body_openapi`, its OpenAPI entry.

Replies never echo large inputs: each error line and each ``input`` of a 422's ``errors`` is cut
to :data:`~micronf.validation.LINE_LIMIT` characters.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from micronf.api.models import ErrorReply
from micronf.validation import LINE_LIMIT, cut, describe_validation_errors

log = logging.getLogger(__name__)

_M = TypeVar("_M", bound=BaseModel)


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


def _in_body(loc: Sequence[int | str]) -> tuple[int | str, ...]:
    """A request error's location without its leading ``body`` (the body is implied), or ``body``
    itself for an error of the whole body."""
    return tuple(loc[1:]) if len(loc) > 1 and loc[0] == "body" else tuple(loc)


def _bounded(errors: Sequence[Any], max_errors: int = 20) -> list[Any]:
    """pydantic's error list for a reply: at most ``max_errors``, each ``input``/``ctx``/``msg`` cut."""
    out = []
    for e in jsonable_encoder(list(errors[:max_errors])):
        e.pop("url", None)
        if "input" in e:
            text = e["input"] if isinstance(e["input"], str) else json.dumps(e["input"])
            if len(text) > LINE_LIMIT:
                e["input"] = cut(text)
        if "ctx" in e:
            e["ctx"] = {k: cut(str(v)) for k, v in e["ctx"].items()}
        if "msg" in e:
            e["msg"] = cut(str(e["msg"]))
        out.append(e)
    return out


class BadJSONError(Exception):
    """A request body that is not JSON (HTTP 400 ``bad_json``)."""


Precheck = Callable[[Any], None]
"""Checks the decoded JSON before the model validates it, raising :class:`RequestValidationError`:
cheap size limits, because pydantic validates in one call that holds the GIL (a worker thread
alone does not keep a large body from stalling the event loop)."""


def parse_body(model: type[_M], body: bytes, content_type: str, precheck: Precheck | None = None) -> _M:
    """``body`` decoded and validated as ``model``; raises :class:`BadJSONError` or a
    :class:`RequestValidationError` (locations under ``body``, as FastAPI's own)."""
    if content_type and "json" not in content_type:
        raise RequestValidationError([{
            "type": "model_attributes_type", "loc": ("body",), "input": body.decode("utf-8", "replace"),
            "msg": "Input should be a valid dictionary or object to extract fields from"}])
    if not body.strip():
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "input": None, "msg": "Field required"}])
    try:
        data = json.loads(body)
        json.dumps(data, ensure_ascii=False).encode()  # a lone surrogate ("\udcff") is no Unicode text
    except json.JSONDecodeError as exc:
        raise BadJSONError(f"request body is not valid JSON: {exc.msg} (at character {exc.pos})") from None
    except UnicodeDecodeError as exc:
        raise BadJSONError(f"request body is not valid JSON: not UTF-8 (at byte {exc.start})") from None
    except UnicodeEncodeError:
        raise BadJSONError("request body is not valid JSON text: a string holds a lone UTF-16 surrogate "
                           "(an unpaired \\ud800-\\udfff escape)") from None
    except RecursionError:
        raise BadJSONError("request body is nested too deeply") from None
    if precheck is not None:
        precheck(data)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None
    except RecursionError:  # absurdly deep nesting: a client mistake, not a crash
        raise BadJSONError("request body is nested too deeply") from None


def json_body(model: type[_M], precheck: Precheck | None = None) -> Callable[[Request], Awaitable[_M]]:
    """A FastAPI dependency: the request body as ``model``, decoded, prechecked and validated in
    a worker thread (the body is already in memory: :class:`micronf.api.security.Guard` read it,
    bounded)."""

    async def dependency(request: Request) -> _M:
        body = await request.body()
        return await run_in_threadpool(parse_body, model, body, request.headers.get("content-type", ""), precheck)

    return dependency


def body_openapi(model: type[BaseModel]) -> dict[str, Any]:
    """The ``openapi_extra`` of a route that takes ``model`` through :func:`json_body` (the schema
    itself is added to the components by :func:`add_schemas`)."""
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def add_schemas(schema: dict[str, Any], *models: type[BaseModel]) -> dict[str, Any]:
    """Add the JSON Schemas of ``models`` (request bodies read by :func:`json_body`) and of the
    models they use to an OpenAPI document's components (in place; returned)."""
    comps = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in models:
        full = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in full.pop("$defs", {}).items():
            comps.setdefault(name, sub)
        comps[model.__name__] = full
    return schema


def error_reply(status: int, kind: str, detail: str, **extra: Any) -> JSONResponse:
    """An :class:`ErrorReply` response (``extra`` adds fields, e.g. ``errors`` of a 422)."""
    return JSONResponse({"error": kind, "detail": detail, **extra}, status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    """Make every failure an :class:`ErrorReply`; client mistakes are 4xx, never a traceback."""

    @app.exception_handler(ApiError)
    async def _api_error(_req: Request, exc: ApiError) -> JSONResponse:
        return error_reply(exc.status, exc.kind, cut(str(exc), 4000) or exc.kind)

    @app.exception_handler(BadJSONError)
    async def _bad_json(_req: Request, exc: BadJSONError) -> JSONResponse:
        return error_reply(400, "bad_json", str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(req: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        bad_json = [e for e in errors if e.get("type") == "json_invalid"]
        if bad_json:
            e = bad_json[0]
            why = (e.get("ctx") or {}).get("error", "cannot be decoded")
            pos = e["loc"][-1] if len(e.get("loc", ())) > 1 else "?"
            return error_reply(400, "bad_json", f"request body is not valid JSON: {why} (at character {pos})")
        detail = describe_validation_errors([{**e, "loc": _in_body(e.get("loc", ()))} for e in errors])
        content_type = req.headers.get("content-type", "")
        if content_type and "json" not in content_type:  # the raw bytes were validated
            sent = cut(content_type, 60)
            detail += f" (the body was sent as {sent!r}: send JSON with Content-Type: application/json)"
        return error_reply(422, "invalid_request", detail, errors=_bounded(errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http(req: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return error_reply(404, "no_route", f"no route {req.method} {req.url.path} (see /openapi.json)")
        if exc.status_code == 405:  # with Allow (RFC 9110): the methods of every route of this path
            allowed = sorted({m for r in app.routes if r.matches(req.scope)[0] != Match.NONE
                              for m in getattr(r, "methods", None) or ()})
            return JSONResponse({"error": "method_not_allowed", "detail": f"{req.method} is not allowed on "
                                 f"{req.url.path} (allowed: {', '.join(allowed)})"}, status_code=405,
                                headers={"Allow": ", ".join(allowed)})
        return error_reply(exc.status_code, "http_error", str(exc.detail))

    @app.exception_handler(Exception)
    async def _bug(req: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", req.method, req.url.path)
        return error_reply(500, "internal", cut(f"{type(exc).__name__}: {exc}"))
