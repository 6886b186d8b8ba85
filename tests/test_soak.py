"""``bench/soak.py --minutes 1``: kill -9 of a µNF, the Rx service, the Tx service, the zygote and
the agent under load.

The soak's own checks are re-checked here from its JSON: every packet the generator made is
accounted for exactly (out + dropped by reason, ``lost_in_crash`` included), the sinks saw no
sequence number twice and saw the frames that went out (plus at most what a dying Tx wrote),
every kind of kill happened and was survived, nothing was left running.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("unf", "rx", "tx", "zygote", "agent")


def test_one_minute_soak_survives_every_kill_and_accounts_for_every_packet(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = tmp_path / "soak.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "soak.py"), "--minutes", "1", "--every", "6,8",
                           "--kinds", ",".join(KINDS), "--seed", "11", "--json", str(out),
                           "--plot", str(tmp_path / "soak.svg"), "--log", str(tmp_path / "agent.log")],
                          env=env, capture_output=True, text=True, timeout=850, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "left running" not in proc.stderr, proc.stderr
    r = json.loads(out.read_text())
    assert {e["kind"] for e in r["events"]} == set(KINDS), r["events"]
    assert r["drained"] and r["packets_in"] == r["count"] and r["generated_beyond_count"] == 0  # none twice
    assert r["packets_in"] == r["packets_out"] + sum(r["dropped"].values()) and r["in_flight"] == 0
    sink = r["sink"]
    assert r["duplicates"] == sink["duplicates"] == 0, sink  # the sinks saw every sequence number at most once
    assert sink["out_of_range"] == sink["unstamped"] == 0, sink
    assert r["packets_out"] <= sink["distinct"] <= r["packets_out"] + r["lost_in_crash"], sink
    assert r["lost_in_crash"] == sum(e["lost"] for e in r["events"])
    for e in r["events"]:
        if e["kind"] in ("unf", "rx", "tx"):
            assert 0 < e["downtime_ms"] < 10_000, e
        if e["kind"] == "agent":
            assert e["forwarded_without_agent"] > 0, e  # traffic went on while no agent ran
    assert r["packets_out"] > 0 and (tmp_path / "soak.svg").read_text().startswith("<svg")
