"""The labelled SQL-injection corpus through the real ValidateUrl kernel: recall and false positives.

Goal (issue 10): recall >= 0.99 with at most 0.1 % false positives over >= 200 injections in the
forms cheat sheets and sqlmap's tamper scripts produce and >= 1000 benign URLs that look real. The
frames are built with scapy; every verdict is also checked against the independent reference
(``reference_target`` + ``reference_is_sqli``: Python ``re`` over the regex-normalized URL).
"""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from micronf.nfs.validate_url import ValidateUrl
from micronf.packet.sqli import SQLI_SIGNATURES
from micronf.runtime.harness import run_kernel
from tests.nfs.sqli_corpus import TAMPERS, benign, injections, reference_is_sqli, reference_target

# the tamper scripts the issue names: each must be in the corpus
NAMED_TAMPERS = ("space2comment", "randomcase", "charencode", "chardoubleencode", "between", "equaltolike",
                 "space2plus", "unionalltounion", "percentage", "apostrophemask")


def request(url: bytes) -> bytes:
    payload = b"GET " + url + b" HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: corpus\r\n\r\n"
    return bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=40000, dport=80, flags="PA") / Raw(payload))


@pytest.fixture(scope="module")
def corpus() -> tuple[list[tuple[bytes, str]], list[bytes]]:
    return injections(), benign()


def test_corpus_shape(corpus: tuple[list[tuple[bytes, str]], list[bytes]]) -> None:
    attacks, clean = corpus
    assert len(attacks) >= 200 and len(clean) >= 1000
    assert len({u for u, _ in attacks}) == len(attacks) and len(set(clean)) == len(clean)
    assert not {u for u, _ in attacks} & set(clean)
    used = {label.split("/")[0] for _, label in attacks}
    assert used == set(TAMPERS) and set(NAMED_TAMPERS) <= used
    assert sum(b" " in u for u, _ in attacks) >= 100  # raw spaces: the case
    assert sum(b" " in u for u in clean) >= 50  # ... and benign URLs sent the same way
    # SQL words in ordinary use are what makes the benign side hard
    for word in (b"select", b"union", b"order", b"drop", b"delete", b"update"):
        assert sum(word in u.lower() for u in clean) >= 30, word
    assert injections() == attacks and benign() == clean  # deterministic


def test_recall_and_false_positives_through_validate_url(corpus: tuple[list[tuple[bytes, str]], list[bytes]]) -> None:
    attacks, clean = corpus
    urls = [u for u, _ in attacks] + clean
    frames = [request(u) for u in urls]
    run = run_kernel(ValidateUrl(), frames)
    dropped = [v == "drop:sqli" for v in run.verdicts]
    # the kernel computes exactly what the independent reference says, URL by URL
    sigs = list(SQLI_SIGNATURES)
    reference = []
    for url in urls:
        target = reference_target(b"GET " + url + b" HTTP/1.1\r\n")
        assert target == url
        reference.append(reference_is_sqli(target, sigs))
    assert dropped == reference
    caught = sum(dropped[: len(attacks)])
    false_pos = sum(dropped[len(attacks) :])
    missed = [label for (_, label), d in zip(attacks, dropped, strict=False) if not d]
    assert caught / len(attacks) >= 0.99, missed
    assert false_pos / len(clean) <= 0.001, [u for u, d in zip(clean, dropped[len(attacks) :], strict=True) if d]
    assert run.counters == {"checked": len(frames), "not_request": 0}
    assert len(run.drops["sqli"]) + len(run.outputs["out"]) == len(frames)
