"""What makes the agent's and the orchestrator's HTTP APIs safe to expose (see docs/security.md).

- **Tokens** (:mod:`micronf.api.statedir`): a bearer token per server, generated at first start into
  its state directory, mode 0600.
- **The guard** (:class:`Guard`): an ASGI middleware in front of either app. It answers 401
  unless the request carries ``Authorization: Bearer <token>`` (compared with
  :func:`hmac.compare_digest`), except ``/health`` (always open: liveness probes) and ``/metrics``
  from a loopback client or with ``metrics_public`` (the Prometheus convention: a local scraper
  needs no secret). It then bounds the request body: a ``Content-Length`` above ``max_body`` is a
  413 before anything is read, and a body streamed without one is cut off at ``max_body`` (413).
  The body is read here, whole, so the app downstream never waits on the network.
- **Exposure** (:func:`check_exposure`): a non-loopback bind without TLS is refused unless the
  operator says ``--insecure``: the token would cross the network in clear text.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from micronf.api.httperrors import add_schemas

MAX_BODY = 1 << 20  # 1 MiB: a 10,000-node graph is ~1 MB of JSON; nothing legitimate needs more
OPEN_PATHS = frozenset({"/health"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is on the loopback interface only."""
    if host == "localhost":
        return True
    try:
        addr = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(addr, "ipv4_mapped", None)
    return bool(addr.is_loopback or (mapped is not None and mapped.is_loopback))


class ExposureError(Exception):
    """A bind that would expose the API without TLS (and ``--insecure`` was not given)."""


def check_exposure(host: str, *, tls: bool, insecure: bool) -> str | None:
    """``None`` for a safe bind; a warning to print for a non-loopback bind without TLS that the
    operator allowed with ``insecure``; raises :class:`ExposureError` (saying why) otherwise."""
    if tls or is_loopback(host):
        return None
    why = (f"listening on {host} without TLS sends the API token and every request in clear text to anyone "
           "on the network")
    if not insecure:
        raise ExposureError(f"{why}: give --tls-cert and --tls-key, bind to 127.0.0.1, or pass --insecure "
                            "(e.g. on a private, trusted network)")
    return f"{why} (--insecure given)"


def _error(status: int, kind: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": kind, "detail": detail}, status_code=status, headers=headers)


class Guard:
    """The ASGI middleware of the module docstring (authentication, then the body limit).

    ``token`` ``None`` turns authentication off (an app embedded in a test or a trusted process);
    the body limit always applies.
    """

    def __init__(self, app: ASGIApp, *, token: str | None, metrics_public: bool = False,
                 max_body: int = MAX_BODY, open_paths: Iterable[str] = OPEN_PATHS) -> None:
        self.app = app
        self._token = None if token is None else token.encode()
        self.metrics_public = metrics_public
        self.max_body = max_body
        self.open_paths = frozenset(open_paths)

    def _authorized(self, scope: Scope) -> bool:
        if self._token is None or scope["path"] in self.open_paths:
            return True
        if scope["path"] == "/metrics":
            client = scope.get("client")
            if self.metrics_public or (client is not None and is_loopback(str(client[0]))):
                return True
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, given = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self._token)
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self._authorized(scope):
            await _error(401, "unauthorized", "this API needs `Authorization: Bearer <token>` (the token is in the "
                         "server's token file, see `--token-file`)",
                         {"WWW-Authenticate": "Bearer"})(scope, receive, send)
            return
        length = dict(scope.get("headers", ())).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await self._too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay([message], receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await self._too_large(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([body], receive), send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _error(413, "body_too_large", f"the request body is larger than {self.max_body} bytes "
                     "(the limit, --max-body)")(scope, receive, send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that returns ``messages`` first, then defers to the real one."""
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


def secure_openapi(schema: dict[str, Any], *, open_paths: Iterable[str] = OPEN_PATHS) -> dict[str, Any]:
    """Declare the bearer scheme, and the 401 (and 413 for bodies) of every guarded operation, in
    an app's OpenAPI document (in place; returned), so clients and fuzzers know about them."""
    open_ = frozenset(open_paths)
    comps = schema.setdefault("components", {})
    comps.setdefault("securitySchemes", {})["bearer"] = {"type": "http", "scheme": "bearer"}
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorReply"}}}}
    for path, ops in schema.get("paths", {}).items():
        for op in ops.values():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            if path not in open_:
                op["security"] = [{"bearer": []}]
                op["responses"].setdefault("401", {**error, "description": "no or wrong bearer token"})
            if "requestBody" in op:
                op["responses"].setdefault("413", {**error, "description": "the request body is too large"})
    return schema


def install_openapi(app: FastAPI, *bodies: type[BaseModel]) -> None:
    """Make ``app``'s OpenAPI document include the ``bodies`` read with
    :func:`micronf.api.httperrors.json_body` and the guard's 401/413 (see :func:`secure_openapi`)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            app.openapi_schema = secure_openapi(add_schemas(schema, *bodies))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
