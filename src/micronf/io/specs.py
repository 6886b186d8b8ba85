"""Backend specs by ``kind`` and the two factories the Rx/Tx services use.

A spec is plain JSON (``{"kind": "afpacket", "iface": "veth0"}``) validated by the backend's own
pydantic model, so the agent API, the CLI and config files share one format and one set of
error messages. :func:`check_rx` / :func:`check_tx` validate without opening anything (the agent
does this before it starts a single process); :func:`open_rx` / :func:`open_tx` build the backend
(in the service process, which owns the socket or file).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from micronf.io.afpacket import AfPacketSpec
from micronf.io.afpacket_rx import AfPacketRx
from micronf.io.afpacket_tx import AfPacketTx
from micronf.io.backend import RxBackend, TxBackend
from micronf.io.generator import GeneratorRx
from micronf.io.generator_spec import GeneratorSpec
from micronf.io.replay import NullTx, NullTxSpec, PcapRx, PcapRxSpec, PcapTx, PcapTxSpec
from micronf.io.sequence import SeqCheckTx, SeqCheckTxSpec
from micronf.io.shard import WHOLE, Shard
from micronf.validation import describe_validation_errors

RxSpec = Annotated[GeneratorSpec | PcapRxSpec | AfPacketSpec, Field(discriminator="kind")]
TxSpec = Annotated[PcapTxSpec | AfPacketSpec | NullTxSpec | SeqCheckTxSpec, Field(discriminator="kind")]
_RX: TypeAdapter[GeneratorSpec | PcapRxSpec | AfPacketSpec] = TypeAdapter(RxSpec)
_TX: TypeAdapter[PcapTxSpec | AfPacketSpec | NullTxSpec | SeqCheckTxSpec] = TypeAdapter(TxSpec)


def check_rx(spec: Mapping[str, Any] | BaseModel, where: str = "rx") -> BaseModel:
    """The validated Rx spec, or ``ValueError`` naming the field (kinds: generator, pcap, afpacket)."""
    try:
        return _RX.validate_python(dict(spec) if isinstance(spec, Mapping) else spec.model_dump())
    except ValidationError as exc:
        raise ValueError(describe_validation_errors(exc.errors(), where=where)) from None


def check_tx(spec: Mapping[str, Any] | BaseModel, where: str = "tx") -> BaseModel:
    """The validated Tx spec, or ``ValueError`` naming the field (kinds: pcap, afpacket, null, seqcheck)."""
    try:
        return _TX.validate_python(dict(spec) if isinstance(spec, Mapping) else spec.model_dump())
    except ValidationError as exc:
        raise ValueError(describe_validation_errors(exc.errors(), where=where)) from None


def open_rx(spec: Mapping[str, Any] | BaseModel, shard: Shard = WHOLE) -> RxBackend:
    """Open the Rx backend ``spec`` describes, taking only the flows of ``shard`` (see
    :mod:`micronf.io.shard`; the whole input by default)."""
    s = check_rx(spec)
    if isinstance(s, GeneratorSpec):
        return GeneratorRx(s, shard=shard)
    if isinstance(s, PcapRxSpec):
        return PcapRx(s, shard=shard)
    assert isinstance(s, AfPacketSpec)
    if not shard.whole and shard.fanout_group is None:  # every replica's socket would get every frame
        raise ValueError(f"an AF_PACKET input shared by {shard.count} replicas needs a fanout group")
    return AfPacketRx(s, None if shard.whole else shard.fanout_group)


def open_tx(spec: Mapping[str, Any] | BaseModel) -> TxBackend:
    """Open the Tx backend ``spec`` describes."""
    s = check_tx(spec)
    if isinstance(s, PcapTxSpec):
        return PcapTx(s)
    if isinstance(s, NullTxSpec):
        return NullTx()
    if isinstance(s, SeqCheckTxSpec):
        return SeqCheckTx(s)
    assert isinstance(s, AfPacketSpec)
    return AfPacketTx(s)
