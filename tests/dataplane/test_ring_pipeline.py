"""The numba pipeline of ``bench/ring.py`` (``bench/ring_pipeline.py``) is correct, not only fast: its
stage loops borrow their arrays (no reference counting), so a view outliving its array would show
here as lost or corrupted packets. Real processes over a real segment: every packet allocated is
delivered or still in flight, and every stage saw every packet (the marker byte the sink checks)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "ring_pipeline.py"


def _pipeline() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ring_pipeline", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("ring_pipeline", module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize(("stages", "burst"), [(1, 64), (3, 64), (2, 1), (2, 256)])
def test_every_packet_is_delivered_or_in_flight_and_seen_by_every_stage(stages: int, burst: int) -> None:
    rp = _pipeline()
    cfg = rp.PipelineConfig(stages=stages, burst=burst, ring_capacity=256)
    res = rp.run_pipeline(cfg, seconds=1.0, warmup=0.2)
    assert res.delivered > 0  # (not a rate: on a shared machine a stage may wait for a CPU a while)
    assert res.marker_errors == 0
    assert res.allocated == res.delivered + res.in_flight
