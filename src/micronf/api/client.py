"""A Python client of an agent's southbound API (what the orchestrator uses to drive agents).

:class:`AgentClient` has the same methods as the agent core (``deploy``, ``remove``,
``deployments``, ``deployment``, ``stats``, ``health``) and returns the same models, so code that
drives an agent does not care whether it is in-process or behind HTTP.

Retries: a request is retried, with exponential backoff, only when repeating it cannot do harm.

* Reads (``GET``) are retried on any transport error (refused, reset, timeout) and on 502/503/504.
* ``deploy`` (``POST``) and ``remove`` (``DELETE``) are retried only when the connection could not
  be established (:class:`httpx.ConnectError` / :class:`httpx.ConnectTimeout`), i.e. when the agent
  provably never saw the request. After the agent (or a proxy in front of it) received one, any
  failure — a timeout while the agent starts processes, a 502/503/504 — is reported, not repeated:
  re-POSTing could deploy twice or turn a success into a 409, and the caller can look with
  :meth:`AgentClient.deployment` and decide.
* 4xx replies are never retried: they name a problem that repeating does not fix.

Authentication: ``token`` (a string, or a function returning one, called per request so a token
file can be re-read) is sent as ``Authorization: Bearer <token>``.

Every failure is an :class:`AgentClientError` carrying the HTTP status (``None`` when the agent was
unreachable) and the ``kind``/``detail`` of the agent's :class:`~micronf.api.models.ErrorReply`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from micronf.api.models import DeploymentInfo, DeployRequest, ErrorReply, GraphStats, Health

_RETRY_STATUS = frozenset({502, 503, 504})
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout)
_M = TypeVar("_M", bound=BaseModel)
_INFOS = TypeAdapter(list[DeploymentInfo])


class AgentClientError(Exception):
    """A request to an agent failed.

    ``status`` is the HTTP status (``None``: no reply, the agent was unreachable), ``kind`` the
    machine-readable error kind (e.g. ``not_found``, ``exists``, ``invalid_request``,
    ``unreachable``) and ``detail`` the agent's message.
    """

    def __init__(self, status: int | None, kind: str, detail: str, *, url: str = "") -> None:
        self.status = status
        self.kind = kind
        self.detail = detail
        self.url = url
        where = f" ({url})" if url else ""
        super().__init__(f"{status or 'no reply'} {kind}: {detail}{where}")


Token = str | Callable[[], str | None] | None
"""A bearer token, or a function that returns the current one (``None``: send none)."""


class BearerAuth(httpx.Auth):
    """``Authorization: Bearer <token>`` on every request (see :data:`Token`)."""

    def __init__(self, token: Token) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._token() if callable(self._token) else self._token
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
        yield request


class AgentClient:
    """Synchronous client of one agent, e.g. ``AgentClient("http://127.0.0.1:8771")``.

    ``timeout`` bounds every request in seconds (``deploy`` starts processes: keep it at several
    seconds); ``retries`` is how many times a retryable failure is repeated, waiting ``backoff``,
    then twice as long each time (capped at ``max_backoff``). ``health_timeout``, when set, makes
    :meth:`health` a probe: one attempt bounded by it, no retry (a hung agent must not hold a
    caller that only asks whether it answers for ``timeout`` × (``retries`` + 1)). ``token``: the
    agent's bearer token (see :data:`Token`). ``transport`` replaces the network
    (e.g. :class:`httpx.MockTransport` in tests). Use as a context manager or call :meth:`close`.
    """

    def __init__(self, base_url: str, *, timeout: float = 60.0, retries: int = 3, backoff: float = 0.1,
                 max_backoff: float = 2.0, transport: httpx.BaseTransport | None = None,
                 token: Token = None, health_timeout: float | None = None) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if timeout <= 0 or backoff < 0 or max_backoff < 0 or (health_timeout is not None and health_timeout <= 0):
            raise ValueError("timeout (and health_timeout) must be > 0 and backoff, max_backoff >= 0")
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.health_timeout = health_timeout
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport,
                                  auth=BearerAuth(token))

    # -- the API --------------------------------------------------------------------------------
    def deploy(self, req: DeployRequest) -> DeploymentInfo:
        """Deploy a graph; returns it as the agent runs it (409 if the name is taken)."""
        # only what the caller set: defaults are the agent's to apply (an older agent then still
        # accepts a request from a newer client that leaves new fields at their defaults)
        body = req.model_dump(mode="json", exclude_unset=True)
        return DeploymentInfo.model_validate(self._request("POST", "/v1/deployments", json=body).json())

    def remove(self, name: str) -> None:
        """Stop and remove a deployment (404 if there is none by that name)."""
        self._request("DELETE", _path(name))

    def deployments(self) -> list[DeploymentInfo]:
        """Every deployment the agent runs."""
        return _INFOS.validate_python(self._request("GET", "/v1/deployments").json())

    def deployment(self, name: str) -> DeploymentInfo:
        """One deployment."""
        return self._get(DeploymentInfo, _path(name))

    def stats(self, name: str) -> GraphStats:
        """A snapshot of one deployment's counters."""
        return self._get(GraphStats, _path(name) + "/stats")

    def health(self) -> Health:
        """The agent's health (a single attempt within ``health_timeout`` when that is set)."""
        if self.health_timeout is None:
            return self._get(Health, "/health")
        return Health.model_validate(self._request("GET", "/health", retries=0, timeout=self.health_timeout).json())

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- transport ------------------------------------------------------------------------------
    def _get(self, model: type[_M], path: str) -> _M:
        return model.model_validate(self._request("GET", path).json())

    def _request(self, method: str, path: str, *, retries: int | None = None, **kw: Any) -> httpx.Response:
        """Send with the retry policy of the module docstring (``retries``: instead of the client's);
        a non-2xx reply raises."""
        idempotent = method == "GET"
        url = f"{self.base_url}{path}"
        retries = self.retries if retries is None else retries
        attempt = 0
        while True:
            last = attempt >= retries
            try:
                resp = self._http.request(method, path, **kw)
            except httpx.TransportError as exc:
                if last or not (idempotent or isinstance(exc, _NOT_SENT)):
                    raise AgentClientError(None, "unreachable", f"{method} failed: {exc!r}", url=url) from exc
            else:
                if resp.is_success:
                    return resp
                if last or not idempotent or resp.status_code not in _RETRY_STATUS:
                    raise _reply_error(resp, url)
            time.sleep(min(self.backoff * 2**attempt, self.max_backoff))
            attempt += 1


def _path(name: str) -> str:
    return f"/v1/deployments/{quote(name, safe='')}"


def _reply_error(resp: httpx.Response, url: str) -> AgentClientError:
    """The agent's ErrorReply as an exception (or the raw text if something else answered)."""
    try:
        err = ErrorReply.model_validate_json(resp.content)
    except ValidationError:
        return AgentClientError(resp.status_code, "http_error", resp.text[:500] or resp.reason_phrase, url=url)
    return AgentClientError(resp.status_code, err.error, err.detail, url=url)
