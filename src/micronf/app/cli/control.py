"""The ``micronf`` commands about SFCs: ``plan`` and ``schema`` (the input files, offline) and the
orchestrator's clients ``deploy``, ``undeploy``, ``list``, ``status``."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import typer
from rich.markup import escape
from rich.table import Table

from micronf.app.cli.base import CliError, console

if TYPE_CHECKING:
    pass


def plan_sfc(
    sfc: Path = typer.Argument(..., help="The SFC request (YAML or JSON), e.g. examples/sfc-fig11.yaml."),
    out: Path | None = typer.Option(None, "--out", file_okay=False,
                                    help="Draw both graphs here (before/after .dot, and .svg with Graphviz)."),
    as_json: bool = typer.Option(False, "--json", help="Print the composition (graphs and rewrites) and the "
                                 "arrangement as JSON."),
    cpus: str | None = typer.Option(None, "--cpus", help="The agent's CPUs the arrangement is chosen for, e.g. 0-3 "
                                    "(default: those of this machine this process may use)."),
    mode: str = typer.Option("auto", "--mode", help="auto (the cost model chooses), pipelined or replicas."),
    replicas: int | None = typer.Option(None, "--replicas", min=1, max=64,
                                        help="Replicas when replicas are chosen (default: one per CPU)."),
    costs: Path | None = typer.Option(None, "--costs", dir_okay=False, help="Cost table (bench/nfs.py --table; "
                                      "default: $MICRONF_COST_TABLE, else the packaged one)."),
) -> None:
    """Dry run: compose the SFC into a µNF graph, optimize it, print both graphs and every rewrite
    with its reason, then how it would run on the CPUs: pipelined, a mix or replicas, each with its
    predicted rate and cycles per packet, the choice and why. Writes nothing unless --out DIR is
    given: then it draws them (DIR/before.svg, DIR/after.svg; .dot without Graphviz)."""
    from micronf.app.render import INSTALL_HINT, write_drawing
    from micronf.app.report import print_arrangement, print_plan
    from micronf.documents import SpecError
    from micronf.orchestrator.arrange import Arrangement, CannotRunError, arrange
    from micronf.orchestrator.compose import compose
    from micronf.orchestrator.costmodel import CostTableError, load_table
    from micronf.orchestrator.load import load_sfc
    from micronf.orchestrator.placement import PlacementError, parse_cpus

    mode_choice = _mode(mode)
    try:
        offered = tuple(sorted(os.sched_getaffinity(0))) if cpus is None else parse_cpus(cpus)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--cpus") from exc
    arrangement: Arrangement | str  # the choice, or why the graph cannot run here
    try:
        bundle = load_sfc(sfc)
        comp = compose(bundle)
        table = load_table(costs)
        try:
            _, arrangement = arrange(bundle, comp, offered, table, mode=mode_choice, replicas=replicas)
        except CannotRunError as exc:
            arrangement = str(exc)
    except (SpecError, CostTableError, PlacementError) as exc:
        raise CliError(str(exc), 2) from exc
    if as_json:
        arr = arrangement if isinstance(arrangement, str) else arrangement.model_dump(mode="json")
        print(json.dumps(comp.model_dump(mode="json") | {"arrangement": arr}, indent=2))
        return
    try:
        drawings = [] if out is None else [write_drawing(g, f"{comp.sfc}: {stage}", out / stage)
                                           for stage, g in (("before", comp.before), ("after", comp.after))]
    except OSError as exc:
        raise CliError(f"cannot write the drawings to --out {out}: {exc.strerror or exc}", 2) from exc
    print_plan(console, comp, drawings)
    if isinstance(arrangement, str):
        console.print(f"[yellow]no arrangement:[/] {escape(arrangement)}")
    else:
        print_arrangement(console, arrangement)
    if any(p.suffix == ".dot" for p in drawings):
        console.print(f"[yellow]no SVG:[/] {INSTALL_HINT}")


MODES = ("auto", "pipelined", "replicas")


def _mode(text: str) -> Literal["auto", "pipelined", "replicas"]:
    """``--mode``'s value, checked."""
    if text not in MODES:
        raise typer.BadParameter(f"expected one of {', '.join(MODES)}, got {text!r}", param_hint="--mode")
    return cast(Literal["auto", "pipelined", "replicas"], text)


def schema(
    kind: str | None = typer.Argument(None, help="unf-descriptor, vnf-template or sfc (default: all three)."),
    out: Path | None = typer.Option(None, "--out", file_okay=False, help="Write KIND.schema.json files here."),
) -> None:
    """Print (or write) the JSON Schema of the orchestrator's input files."""
    from micronf.orchestrator.models import KINDS, json_schemas

    if kind is not None and kind not in KINDS:
        raise CliError(f"no file kind {kind!r} (kinds: {', '.join(KINDS)})", 2)
    schemas = {k: s for k, s in json_schemas().items() if kind in (None, k)}
    if out is None:
        print(json.dumps(schemas[kind] if kind else schemas, indent=2))
        return
    out.mkdir(parents=True, exist_ok=True)
    for k, s in schemas.items():
        (out / f"{k}.schema.json").write_text(json.dumps(s, indent=2) + "\n", encoding="utf-8")
        console.print(f"wrote {out / f'{k}.schema.json'}")


# -- the orchestrator and its clients -----------------------------------------------------------
ORCHESTRATOR_URL = "http://127.0.0.1:8770"
_ORCH_OPTION = typer.Option(ORCHESTRATOR_URL, "--orchestrator", help="The orchestrator's URL.")
_TOKEN_OPTION = typer.Option(None, "--token-file", dir_okay=False, help="The orchestrator's token file (default: "
                             "$MICRONF_TOKEN, else STATE/orchestrator.token, the local orchestrator's).")


def _client_token(token_file: Path | None) -> str | None:
    """The token the client commands send: --token-file, else $MICRONF_TOKEN, else the local
    orchestrator's default token file if there is one (so the local demo needs no setup)."""
    from micronf.api.statedir import TokenError, orchestrator_token_file, read_token, read_token_if_any

    if token_file is not None:
        try:
            return read_token(token_file)
        except TokenError as exc:
            raise typer.BadParameter(str(exc), param_hint="--token-file") from exc
    return os.environ.get("MICRONF_TOKEN") or read_token_if_any(orchestrator_token_file())



def _orch_call(base: str, method: str, path: str, body: object = None, token_file: Path | None = None) -> object:
    """One request to the orchestrator (with the token of :func:`_client_token`); failures end the
    command with a readable message."""
    import httpx

    from micronf.api.statedir import bearer

    headers = bearer(_client_token(token_file))
    try:
        resp = httpx.request(method, base.rstrip("/") + path, json=body, timeout=300.0, headers=headers)
    except httpx.TransportError as exc:
        raise CliError(f"cannot reach the orchestrator at {base} ({type(exc).__name__}: {exc}); "
                       "is `micronf orchestrator` running?") from exc
    if resp.is_success:
        return resp.json() if resp.content else None
    try:
        err = resp.json()
        what = f"{err['error']}: {err['detail']}"
    except (ValueError, KeyError, TypeError):
        what = resp.text[:500] or resp.reason_phrase
    raise CliError(f"({resp.status_code}) {what}")


def _json_arg(text: str, param: str) -> object:
    """A JSON value given inline or as @FILE (JSON or YAML)."""
    import yaml

    try:
        return yaml.safe_load(Path(text[1:]).read_text(encoding="utf-8")) if text.startswith("@") else json.loads(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise typer.BadParameter(f"expected JSON or @FILE: {exc}", param_hint=param) from exc


def deploy(
    sfc: Path = typer.Argument(..., exists=True, dir_okay=False, help="The SFC request (YAML or JSON)."),
    name: str | None = typer.Option(None, help="Deployment name (default: the SFC's name)."),
    agent: str | None = typer.Option(None, help="Run on this agent (name or URL; default: hinted or least loaded)."),
    rx: str | None = typer.Option(None, help='Rx backend spec, JSON or @FILE, e.g. \'{"kind": "pcap", "path": '
                                  '"in.pcap"}\' (default: no traffic).'),
    outputs: list[str] = typer.Option([], "--output", help="OUTPUT=SPEC: where an SFC output (e.g. appfw.web) or "
                                      'exit goes, SPEC an output JSON or @FILE, e.g. \'{"backend": {"kind": "null"}}\' '
                                      "(repeatable; default: every exit to null)."),
    mode: str = typer.Option("auto", "--mode", help="auto (the cost model chooses, see `micronf plan`), pipelined "
                             "or replicas."),
    replicas: int | None = typer.Option(None, "--replicas", min=1, max=64,
                                        help="Replicas when replicas run (default: one per CPU of the agent)."),
    orchestrator_url: str = _ORCH_OPTION,
    token_file: Path | None = _TOKEN_OPTION,
) -> None:
    """Deploy an SFC: the orchestrator composes it into an optimized µNF graph, chooses how it runs
    on the agent's cores (pipelined, a mix or replicas) and deploys it there. The SFC file and the
    templates it imports are sent with the request."""
    from micronf.documents import SpecError
    from micronf.orchestrator.northbound import read_sfc_source

    try:
        text, files = read_sfc_source(sfc)
    except SpecError as exc:
        raise CliError(str(exc), 2) from exc
    outs: dict[str, object] = {}
    for item in outputs:
        key, sep, spec = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"expected OUTPUT=SPEC, got {item!r}", param_hint="--output")
        outs[key] = _json_arg(spec, "--output")
    body = {"sfc": text, "files": files, "name": name, "agent": agent, "outputs": outs,
            "rx": None if rx is None else _json_arg(rx, "--rx"), "mode": _mode(mode), "replicas": replicas}
    info = _orch_call(orchestrator_url, "POST", "/v1/sfcs", body, token_file)
    assert isinstance(info, dict)
    runs = f"{info['replicas']} replicas" if info.get("mode") == "replicas" else "pipelined"
    console.print(f"deployed [bold]{escape(info['name'])}[/] ({len(info['graph']['nodes'])} µNFs, "
                  f"{len(info['rewrites'])} rewrites, {runs}) on {', '.join(info['agents'])}: {info['state']}")


def undeploy(name: str = typer.Argument(..., help="The deployment."), orchestrator_url: str = _ORCH_OPTION,
             token_file: Path | None = _TOKEN_OPTION) -> None:
    """Remove a deployment from its agents and from the orchestrator."""
    _orch_call(orchestrator_url, "DELETE", f"/v1/sfcs/{name}", token_file=token_file)
    console.print(f"undeployed {escape(name)}")


def _deployments_table(infos: list[dict[str, object]]) -> Table:
    table = Table(title="SFC deployments")
    for col in ("name", "sfc", "state", "agents", "µNFs", "updated", "error"):
        table.add_column(col)
    for i in infos:
        graph = i["graph"]
        assert isinstance(graph, dict) and isinstance(i["agents"], list) and isinstance(i["updated_at"], float)
        table.add_row(str(i["name"]), str(i["sfc"]), str(i["state"]), ", ".join(i["agents"]),
                      str(len(graph["nodes"])), datetime.fromtimestamp(i["updated_at"]).strftime("%H:%M:%S"),
                      escape(str(i["error"] or "")))
    return table


def list_sfcs(orchestrator_url: str = _ORCH_OPTION, token_file: Path | None = _TOKEN_OPTION) -> None:
    """List the SFC deployments the orchestrator knows, with their state."""
    infos = _orch_call(orchestrator_url, "GET", "/v1/sfcs", token_file=token_file)
    assert isinstance(infos, list)
    console.print(_deployments_table(infos))


def _status_table(now: dict[str, Any], before: dict[str, Any] | None) -> Table:
    """Per-µNF rows (rate from the two samples), SFC totals in the caption."""
    dt = now["at"] - before["at"] if before else 0.0
    prev = {u["name"]: u for u in before["unfs"]} if before else {}
    table = Table(title=f"{now['name']} ({now['state']})")
    table.add_column("µNF", no_wrap=True, min_width=max((len(u["name"]) for u in now["unfs"]), default=3))
    for col in ("type", "cpu", "inst", "rate kpps", "packets", "dropped", "ring"):
        table.add_column(col, justify="left" if col == "type" else "right")
    for u in now["unfs"]:
        p = prev.get(u["name"])
        rate = f"{(u['packets_in'] - p['packets_in']) / dt / 1e3:,.1f}" if p and dt > 0 else "-"
        table.add_row(u["name"], u["type"], str(u["cpu"] if u["cpu"] is not None else "-"), str(u["instances"]),
                      rate, f"{u['packets_in']:,}", f"{u['dropped']:,}",
                      f"{u['ring_occupancy']}/{u['ring_capacity']}")
    lat, cons = now["latency"], now["conservation"]
    outs = ", ".join(f"{k} {v:,}" for k, v in now["outputs"].items()) or "-"
    drops = ", ".join(f"{k} {v:,}" for k, v in sorted(now["drops"].items())) or "none"
    table.caption = (f"in {now['packets_in']:,} → out {now['packets_out']:,} ({outs}); drops: {drops}; latency "
                     f"p50 {lat['p50_ns'] / 1e3:,.1f} µs p99 {lat['p99_ns'] / 1e3:,.1f} µs; "
                     f"conservation {'ok' if cons['ok'] else 'VIOLATED'} (in flight {cons['in_flight']})")
    return table


def status(
    name: str | None = typer.Argument(None, help="A deployment (default: list them all)."),
    watch: bool = typer.Option(False, "--watch", help="Refresh until Ctrl+C."),
    interval: float = typer.Option(1.0, min=0.1, help="Seconds between the two samples a rate comes from."),
    orchestrator_url: str = _ORCH_OPTION,
    token_file: Path | None = _TOKEN_OPTION,
) -> None:
    """The live state of a deployment: per µNF its rate (from two samples), packets, drops and ring
    occupancy; per SFC packets in/out per output, drops by reason, latency p50/p99, conservation."""
    from rich.live import Live

    if name is None:
        list_sfcs(orchestrator_url, token_file)
        return
    path = f"/v1/sfcs/{name}/stats"

    def sample() -> dict[str, Any]:
        s = _orch_call(orchestrator_url, "GET", path, token_file=token_file)
        assert isinstance(s, dict)
        return s

    before = sample()
    time.sleep(interval)
    now = sample()
    if not watch:
        console.print(_status_table(now, before))
        return
    with Live(_status_table(now, before), console=console, auto_refresh=False) as live:
        try:
            while True:
                time.sleep(interval)
                before, now = now, sample()
                live.update(_status_table(now, before), refresh=True)
        except KeyboardInterrupt:
            pass
