"""What the Rx and Tx services are told: a plain config each, written into the graph segment.

The agent (or whoever deploys a graph with services) turns its request into these small models
and stores them in the segment (:func:`write_config`) before it starts the services; a service
reads only its own (:func:`read_rx_config`, :func:`read_tx_config`). So the services know
nothing of the agent's HTTP request, and a restarted service, or one a new agent adopted, reads
the same config again.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from micronf.dataplane.segment import Memory, read_json, write_json
from micronf.io.shard import Shard
from micronf.packet.rules import FlowRule
from micronf.runtime.graph import Policy

RX_CONFIG, TX_CONFIG = "rx.config", "tx.config"  # segment regions
CONFIG_BYTES = 1 << 20


class _ServiceConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="the graph's name (for messages)")
    burst: int = Field(description="frames per burst asked for (the services move at least 256)")
    coalesce_us: int = Field(description="interrupt moderation, see micronf.runtime.process")
    cpu: int | None = None
    policy: Policy = "other"


class RxConfig(_ServiceConfig):
    """The Rx service: where frames come from and which enter the graph.

    ``shard``/``shards``: this graph is replica ``shard`` of ``shards`` and takes only the flows of
    its shard (``micronf.io.shard``): in-memory sources replay its flows' frames, an AF_PACKET
    socket joins ``fanout_group`` (one group id per replicated graph and interface)."""

    backend: dict[str, object] | None = Field(description="an Rx backend spec (micronf.io.specs); None: no traffic")
    rules: list[FlowRule] = Field(default_factory=list)
    shard: int = Field(0, ge=0, description="the flow shard this input takes (replica index)")
    shards: int = Field(1, ge=1, description="how many shards the input is split into (replicas)")
    fanout_group: int | None = Field(None, ge=0, le=0xFFFF, description="AF_PACKET fanout group of the replicas")

    @model_validator(mode="after")
    def _shard_in_range(self) -> RxConfig:
        if self.shard >= self.shards:
            raise ValueError(f"shard {self.shard} of {self.shards}: need shard < shards")
        return self

    @property
    def sharding(self) -> Shard:
        """The part of the input this graph takes."""
        return Shard(self.shard, self.shards, self.fanout_group)


class TxOutput(BaseModel):
    """Where one exit of the graph goes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    exit: str
    backend: dict[str, object] | None = Field(description="a Tx backend spec; None: drained, counted no_output")
    next_hop_mac: str | None = None


class TxConfig(_ServiceConfig):
    """The Tx service: one output per exit name, in the order of the ``tx.stats`` rows."""

    outputs: list[TxOutput]
    ns_per_cycle: float = Field(description="TSC calibration for the latency histogram")


def write_config(mem: Memory, cfg: RxConfig | TxConfig) -> None:
    write_json(mem, RX_CONFIG if isinstance(cfg, RxConfig) else TX_CONFIG, cfg.model_dump(mode="json"))


def read_rx_config(mem: Memory) -> RxConfig:
    return RxConfig.model_validate(read_json(mem, RX_CONFIG))


def read_tx_config(mem: Memory) -> TxConfig:
    return TxConfig.model_validate(read_json(mem, TX_CONFIG))
