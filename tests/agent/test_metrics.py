"""Prometheus exposition of the agent: parsed back with prometheus_client's own parser."""

from __future__ import annotations

import anyio
import httpx
import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from micronf.agent.metrics import AgentCollector
from micronf.agent.server import create_app
from micronf.api.errors import DeploymentNotFoundError
from micronf.api.models import DeployRequest
from tests.agent._fake_agent import FakeAgent, request_body

pytestmark = pytest.mark.timeout(60)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(agent: FakeAgent) -> str:
    registry = CollectorRegistry()
    registry.register(AgentCollector(agent))
    return prometheus_client.generate_latest(registry).decode()


def samples(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def value(got: Samples, name: str, **labels: str) -> float:
    return got[name, frozenset(labels.items())]


@pytest.fixture
def agent() -> FakeAgent:
    fake = FakeAgent()
    fake.deploy(DeployRequest.model_validate(request_body("web")))
    return fake


NODE = {"deployment": "web", "node": "chk", "type": "CheckIPHeader", "instance_of": ""}
INSTANCE = {"deployment": "web", "node": "swap#1", "type": "MacSwapper", "instance_of": "swap"}


def test_node_counters(agent: FakeAgent) -> None:
    got = samples(scrape(agent))
    assert value(got, "micronf_nf_rx_packets_total", **NODE) == 1000
    assert value(got, "micronf_nf_tx_packets_total", **NODE) == 990
    assert value(got, "micronf_nf_batches_total", **NODE) == 40
    assert value(got, "micronf_nf_cycles_total", **NODE) == 123456
    assert value(got, "micronf_nf_idle_polls_total", **NODE) == 5
    assert value(got, "micronf_nf_yields_total", **NODE) == 3
    assert value(got, "micronf_nf_rx_packets_total", **INSTANCE) == 2
    assert value(got, "micronf_nf_verdicts_total", **NODE, verdict="out") == 990
    assert value(got, "micronf_nf_counter_total", **{**NODE, "node": "swap", "type": "MacSwapper"},
                 counter="swapped") == 985


def test_drops_by_reason(agent: FakeAgent) -> None:
    got = samples(scrape(agent))
    drops = {(dict(k[1])["reason"], dict(k[1])["source"]): v for k, v in got.items()
             if k[0] == "micronf_nf_drops_total" and dict(k[1])["node"] == "chk"}
    assert drops == {("bad_checksum", "nf"): 6, ("bad_length", "nf"): 1, ("unconnected", "runtime"): 2,
                     ("full", "runtime"): 1, ("bad_verdict", "runtime"): 0}
    assert value(got, "micronf_graph_drops_total", deployment="web", where="rx", reason="unmatched") == 10
    assert value(got, "micronf_graph_drops_total", deployment="web", where="chk", reason="bad_checksum") == 6


def test_ports_pool_and_services(agent: FakeAgent) -> None:
    got = samples(scrape(agent))
    ring = {**NODE, "src": "rx", "ring": "0"}
    assert value(got, "micronf_ring_occupancy", **ring) == 12
    assert value(got, "micronf_ring_capacity", **ring) == 1024
    pair = {"deployment": "web", "src": "chk", "dst": "swap", "kind": "pp"}
    assert value(got, "micronf_egress_sent_total", **pair) == 985
    assert value(got, "micronf_egress_full_total", **pair) == 3
    assert value(got, "micronf_egress_sent_total", **{**pair, "dst": "swap#1"}) == 2
    assert value(got, "micronf_pool_free", deployment="web") == 4000
    assert value(got, "micronf_pool_slots", deployment="web") == 4096
    assert value(got, "micronf_pool_alloc_failures_total", deployment="web") == 9
    assert value(got, "micronf_pool_allocations_total", deployment="web") == 5000
    assert value(got, "micronf_rx_service_total", deployment="web", counter="unmatched") == 10
    assert value(got, "micronf_tx_service_total", deployment="web", output="out", counter="backend_full") == 7
    assert value(got, "micronf_in_flight", deployment="web") == 6
    assert value(got, "micronf_conservation_ok", deployment="web") == 1


def test_latency_is_a_cumulative_histogram(agent: FakeAgent) -> None:
    text = scrape(agent)
    fam = next(f for f in text_string_to_metric_families(text) if f.name == "micronf_latency_seconds")
    assert fam.type == "histogram"
    assert "approximate" in fam.documentation
    buckets = [(s.labels["le"], s.value) for s in fam.samples if s.name.endswith("_bucket")]
    # per-bucket counts 100 @1µs, 600 @4µs, 270 @16µs, 10 @65.536µs (given unsorted by the fake), 980 in all
    assert [(float(le), n) for le, n in buckets] == [(1e-6, 100), (4e-6, 700), (16e-6, 970), (65.536e-6, 980),
                                                      (float("inf"), 980)]
    got = samples(text)
    assert value(got, "micronf_latency_seconds_count", deployment="web") == 980
    # each packet at its bucket's upper bound, the last bucket capped at the 50 µs maximum
    expected_sum = (100 * 1e-6) + (600 * 4e-6) + (270 * 16e-6) + (10 * 50e-6)
    assert value(got, "micronf_latency_seconds_sum", deployment="web") == pytest.approx(expected_sum)


def test_processes_restarts_and_scaling(agent: FakeAgent) -> None:
    got = samples(scrape(agent))
    # fake processes: index i runs node i, restarted 3*i times, process 1 is dead
    assert value(got, "micronf_process_restarts_total", deployment="web", process="1", nodes="swap") == 3
    assert value(got, "micronf_process_alive", deployment="web", process="0", nodes="chk") == 1
    assert value(got, "micronf_process_alive", deployment="web", process="1", nodes="swap") == 0
    assert value(got, "micronf_scale_events_total", deployment="web", node="swap", action="out") == 2
    assert value(got, "micronf_scale_events_total", deployment="web", node="swap", action="in") == 1
    assert value(got, "micronf_scale_events_total", deployment="web", node="chk", action="out") == 0
    assert ("micronf_scale_events_total", frozenset({"deployment": "web", "node": "swap#1", "action": "out"}
                                                    .items())) not in got, "instances are not scaled themselves"
    assert value(got, "micronf_reclaimed_buffers_total", deployment="web") == 17
    assert value(got, "micronf_deployments") == 1
    assert value(got, "micronf_processes_alive") == 1


def test_names_and_types(agent: FakeAgent) -> None:
    for fam in text_string_to_metric_families(scrape(agent)):
        assert fam.name.startswith("micronf_"), fam.name
        assert fam.documentation, fam.name
        if fam.type == "counter":
            assert {s.name for s in fam.samples} == {f"{fam.name}_total"}


def test_a_deployment_removed_during_the_scrape_is_skipped(agent: FakeAgent) -> None:
    agent.deploy(DeployRequest.model_validate(request_body("api")))
    agent.fail["stats"] = DeploymentNotFoundError("no deployment named 'web'")
    agent.fail_times["stats"] = 1  # "web" (listed first) vanishes; "api" is still there
    deployments = {s.labels.get("deployment") for fam in text_string_to_metric_families(scrape(agent))
                   for s in fam.samples}
    assert deployments - {None} == {"api"}


def test_no_deployment_no_per_deployment_series() -> None:
    got = samples(scrape(FakeAgent()))
    assert value(got, "micronf_deployments") == 0
    assert all("deployment" not in dict(labels) for _, labels in got)


def test_metrics_endpoint_uses_a_private_registry(agent: FakeAgent) -> None:
    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(agent, token=None))
        async with httpx.AsyncClient(transport=transport, base_url="http://agent") as c:
            return await c.get("/metrics")

    r = anyio.run(get)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert value(samples(r.text), "micronf_pool_free", deployment="web") == 4000
    assert "micronf_pool_free" not in prometheus_client.generate_latest().decode()
