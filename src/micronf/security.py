"""What makes the agent's and the orchestrator's HTTP APIs safe to expose (see docs/security.md).

- **State directory** (:func:`state_dir`): where each server keeps its token (and the agent its
  data directory): ``$MICRONF_STATE_DIR``, else ``$XDG_STATE_HOME/micronf``, else
  ``~/.local/state/micronf``. The defaults are such that the local demo (an agent and an
  orchestrator on this machine, the CLI talking to the orchestrator) needs no setup by hand.
- **Tokens** (:func:`load_token`): a bearer token per server, generated at first start into a
  file of mode 0600 (``secrets.token_urlsafe(32)``, 256 bits).
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
import logging
import os
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from micronf.httperrors import add_schemas

log = logging.getLogger("micronf.security")

MAX_BODY = 1 << 20  # 1 MiB: a 10,000-node graph is ~1 MB of JSON; nothing legitimate needs more
OPEN_PATHS = frozenset({"/health"})


def state_dir() -> Path:
    """The directory servers keep their tokens (and the agent its data) in, by default."""
    explicit = os.environ.get("MICRONF_STATE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "state") / "micronf"


def agent_token_file() -> Path:
    """The local agent's default token file (the orchestrator sends it to agents by default)."""
    return state_dir() / "agent" / "token"


def agent_data_dir() -> Path:
    """The local agent's default data directory (the only place its capture files may be)."""
    return state_dir() / "agent" / "data"


def orchestrator_token_file() -> Path:
    """The orchestrator's default token file (the CLI reads it when given no other token)."""
    return state_dir() / "orchestrator.token"


class TokenError(Exception):
    """A token file that cannot be used (unreadable, empty, not a regular file)."""


def read_token(path: Path) -> str:
    """The token in ``path`` (first line, stripped); warns when others may read the file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise TokenError(f"cannot read the token file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise TokenError(f"the token file {path} is not a regular file")
        if st.st_mode & 0o077:
            log.warning("the token file %s is readable by others (mode %o): chmod 600 it", path, st.st_mode & 0o777)
        data: bytes = f.read(4096)
    lines = data.decode("utf-8", "replace").strip().splitlines()
    if not lines or not lines[0].strip():
        raise TokenError(f"the token file {path} is empty")
    return lines[0].strip()


def load_token(path: Path) -> str:
    """The token in ``path``, creating the file (mode 0600, its directory 0700) with a new random
    token when it does not exist."""
    path = path.expanduser()
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except FileExistsError:  # created meanwhile by another process: use that one
            return read_token(path)
        except OSError as exc:
            raise TokenError(f"cannot create the token file {path}: {exc.strerror}") from None
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
        log.info("generated a new API token in %s", path)
    return read_token(path)


def read_token_if_any(path: Path) -> str | None:
    """The token in ``path``, or ``None`` when there is no usable one (the request then goes
    without, and the server's 401 says so): a client side that must not fail before asking."""
    try:
        return read_token(path)
    except TokenError as exc:
        log.debug("%s", exc)
        return None


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


def bearer(token: str | None) -> dict[str, str]:
    """The ``Authorization`` header for ``token`` (none for ``None``)."""
    return {} if token is None else {"Authorization": f"Bearer {token}"}


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
    :func:`micronf.httperrors.json_body` and the guard's 401/413 (see :func:`secure_openapi`)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            app.openapi_schema = secure_openapi(add_schemas(schema, *bodies))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
