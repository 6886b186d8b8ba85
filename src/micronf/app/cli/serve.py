"""The two ``micronf`` servers: ``agent`` (this machine's southbound API) and ``orchestrator``
(the northbound API over the agents), served safely (TLS or loopback, see docs/security.md)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from micronf.app.cli.base import CliError, err_console

if TYPE_CHECKING:
    from micronf.api.protocol import AgentCore
    from micronf.orchestrator.placement import AgentRef


# -- serving an API safely (see docs/security.md) ------------------------------------------------
_TLS_CERT = typer.Option(None, "--tls-cert", exists=True, dir_okay=False, help="Serve HTTPS with this certificate "
                         "(PEM; with --tls-key).")
_TLS_KEY = typer.Option(None, "--tls-key", exists=True, dir_okay=False, help="The certificate's private key (PEM).")
_INSECURE = typer.Option(False, "--insecure", help="Allow a non-loopback --host without TLS (the token and every "
                         "request then cross the network in clear text).")
_MAX_BODY = typer.Option(1 << 20, "--max-body", min=1024, help="Largest request body in bytes (larger: 413).")


def _freeze_heap() -> None:
    """Exempt what is loaded at start (numba, numpy, the µNF modules: a large heap) from the
    garbage collector: a full collection triggered by a request's many small objects otherwise
    stops the server, /health included, for 100+ ms."""
    import gc

    gc.collect()
    gc.freeze()


def _serving(host: str, tls_cert: Path | None, tls_key: Path | None, insecure: bool,
             token_file: Path) -> tuple[str, dict[str, Any]]:
    """The API token (from ``token_file``, created when missing) and uvicorn's TLS options; refuses
    (exit 2) a non-loopback bind without TLS unless ``insecure``, and warns when it is allowed."""
    from micronf.api.security import ExposureError, check_exposure
    from micronf.api.statedir import TokenError, load_token

    if (tls_cert is None) != (tls_key is None):
        raise typer.BadParameter("give both --tls-cert and --tls-key, or neither", param_hint="--tls-cert/--tls-key")
    try:
        warning = check_exposure(host, tls=tls_cert is not None, insecure=insecure)
    except ExposureError as exc:
        raise CliError(str(exc), 2) from exc
    if warning:
        err_console.print(f"[yellow]warning:[/] {escape(warning)}")
    try:
        token = load_token(token_file)
    except TokenError as exc:
        raise CliError(str(exc), 2) from exc
    tls = {} if tls_cert is None else {"ssl_certfile": str(tls_cert), "ssl_keyfile": str(tls_key)}
    return token, tls


def agent(
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0: every interface; needs --tls-cert/"
                             "--tls-key or --insecure)."),
    port: int = typer.Option(8771, min=1, max=65535, help="TCP port to listen on."),
    log_level: str = typer.Option("info", help="uvicorn log level: critical, error, warning, info, debug or trace."),
    token_file: Path | None = typer.Option(None, "--token-file", dir_okay=False, help="The API's bearer token "
                                           "(created, mode 0600, with a new random token when missing; default: "
                                           "STATE/agent/token, STATE = $MICRONF_STATE_DIR or ~/.local/state/micronf)."),
    data_dir: Path | None = typer.Option(None, "--data-dir", file_okay=False, help="The only directory capture "
                                         "files of a deploy request may be in, by name (default: STATE/agent/data)."),
    metrics_public: bool = typer.Option(False, "--metrics-public", help="Serve /metrics without the token to any "
                                        "client (default: only to loopback clients)."),
    tls_cert: Path | None = _TLS_CERT,
    tls_key: Path | None = _TLS_KEY,
    insecure: bool = _INSECURE,
    max_body: int = _MAX_BODY,
    keep_graphs: bool = typer.Option(False, "--keep-graphs", help="On SIGTERM/Ctrl+C leave the graphs running "
                                     "for the next agent to adopt (an upgrade) instead of removing them."),
) -> None:
    """Run the agent of this machine: the southbound HTTP API that deploys processing graphs of µNFs
    here, with GET /health, GET /metrics (Prometheus) and GET /openapi.json (the API's schema).
    Every route but /health (and /metrics from loopback) needs the bearer token in --token-file.

    On SIGTERM or Ctrl+C it stops serving, then removes every deployment (its processes and shared
    memory) before it exits (with --keep-graphs: leaves them running); a second signal during that
    cleanup exits at once. The graphs do not depend on the agent process: if it dies (kill -9, a
    crash) they keep forwarding, and the next agent started on this machine adopts them.
    """

    import uvicorn

    from micronf.agent.core import Agent
    from micronf.agent.identity import agent_identity
    from micronf.agent.server import create_app, stop_all
    from micronf.api.statedir import agent_token_file

    levels = ("critical", "error", "warning", "info", "debug", "trace")
    if log_level not in levels:
        raise typer.BadParameter(f"must be one of {', '.join(levels)}", param_hint="--log-level")
    token, tls = _serving(host, tls_cert, tls_key, insecure, token_file or agent_token_file())
    # graphs outlive this process; adopt those a previous agent on this address left
    core = Agent(agent_id=agent_identity(host, port), data_dir=data_dir, detached=True, adopt=True)
    api = create_app(core, token=token, metrics_public=metrics_public, max_body=max_body)
    server = uvicorn.Server(uvicorn.Config(api, host=host, port=port, log_level=log_level, **tls))
    _freeze_heap()

    def _stop(_signum: int, _frame: object) -> None:
        server.should_exit = True

    # uvicorn installs its own handlers while serving and re-raises the signal afterwards: into
    # these, so the process goes on to the cleanup below instead of dying by the default action.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop)
    try:
        server.run()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        if keep_graphs:
            core.leave_running()
        else:
            stop_all(core)  # also when uvicorn could not start (it exits 1 after logging why, e.g. port taken)



def orchestrator(
    host: str = typer.Option("127.0.0.1", help="Address to listen on (non-loopback: needs --tls-cert/--tls-key "
                             "or --insecure)."),
    port: int = typer.Option(8770, min=1, max=65535, help="TCP port to listen on."),
    db: Path = typer.Option(Path("~/.local/state/micronf/orchestrator.db"), help="The SQLite state file."),
    agents: list[str] = typer.Option(["http://127.0.0.1:8771"], "--agent", help="An agent, [NAME=]URL[#cpus=LIST] "
                                     "(repeat for several; a loopback agent offers this machine's CPUs)."),
    reconcile_s: float = typer.Option(10.0, "--reconcile-interval", min=0.1,
                                      help="Seconds between reconciles with the agents."),
    log_level: str = typer.Option("info", help="uvicorn log level: critical, error, warning, info, debug or trace."),
    token_file: Path | None = typer.Option(None, "--token-file", dir_okay=False, help="The API's bearer token "
                                           "(created, mode 0600, when missing; default: STATE/orchestrator.token; "
                                           "the micronf client commands read it by default)."),
    agent_tokens: list[str] = typer.Option([], "--agent-token-file", help="[AGENT=]FILE: the token file of an "
                                           "agent (AGENT: its name or URL; without: every agent). Read at each "
                                           "request. Default: the local agent's, STATE/agent/token."),
    tls_cert: Path | None = _TLS_CERT,
    tls_key: Path | None = _TLS_KEY,
    insecure: bool = _INSECURE,
    max_body: int = _MAX_BODY,
) -> None:
    """Run the orchestrator: the northbound HTTP API (SFC create/list/get/delete, stats, plan) over
    the given agents, with every deployment kept in a SQLite file. On start it reconciles the stored
    deployments with the agents (redeploys what a restarted agent lost), then again periodically.
    Every route but /health needs the bearer token in --token-file; each agent gets its own token."""
    import logging
    from functools import partial

    import uvicorn

    from micronf.api.statedir import agent_token_file, orchestrator_token_file, read_token_if_any
    from micronf.orchestrator.api import create_app
    from micronf.orchestrator.placement import AgentRef
    from micronf.orchestrator.service import Orchestrator, http_agent
    from micronf.orchestrator.store import Store, StoreError

    try:
        refs = [AgentRef.parse(a) for a in agents]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--agent") from exc
    try:
        store = Store(db)
    except StoreError as exc:
        raise CliError(str(exc)) from exc
    token, tls = _serving(host, tls_cert, tls_key, insecure, token_file or orchestrator_token_file())
    files = _agent_token_files(refs, agent_tokens)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    def connect(ref: AgentRef) -> AgentCore:  # the token file is read per request: the agent may start later
        return http_agent(ref, token=partial(read_token_if_any, files.get(ref.url, agent_token_file())))

    orch = Orchestrator(store, refs, connect=connect)
    _freeze_heap()
    with orch.running(reconcile_s):
        uvicorn.run(create_app(orch, token=token, max_body=max_body), host=host, port=port, log_level=log_level,
                    **tls)
    store.close()


def _agent_token_files(refs: list[AgentRef], items: list[str]) -> dict[str, Path]:
    """Agent URL -> its token file, from ``--agent-token-file [AGENT=]FILE`` items (see orchestrator)."""
    from micronf.api.statedir import agent_token_file

    files = {r.url: agent_token_file() for r in refs}
    for item in items:
        who, sep, file = item.rpartition("=")
        hit = [r for r in refs if not sep or who in (r.name, r.url)]
        if not hit:
            raise typer.BadParameter(f"no --agent named {who!r} (agents: {', '.join(r.name for r in refs)})",
                                     param_hint="--agent-token-file")
        for r in hit:
            files[r.url] = Path(file).expanduser()
    return files
