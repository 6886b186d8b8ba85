"""ValidateUrl: verdicts against Python ``re`` over the once-decoded URL; non-requests pass uncounted."""

from __future__ import annotations

import re

import pytest
from scapy.layers.inet import IP, TCP, UDP, IPOption_RR
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from micronf.nfs.validate_url import ValidateUrl
from micronf.packet.sqli import SQLI_SIGNATURES
from micronf.runtime.harness import run_kernel
from micronf.runtime.nf import DOC_SECTIONS, NFConfigError
from tests.nfs.sqli_corpus import reference_is_sqli, reference_target

PAYLOAD_AT = 14 + 20 + 20


def tcp(payload: bytes) -> bytes:
    return bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=40000, dport=80) / Raw(payload))


def get(url: bytes) -> bytes:
    return tcp(b"GET " + url + b" HTTP/1.1\r\nHost: shop.example\r\n\r\n")


def is_sqli(url: bytes, signatures: list[str]) -> bool:
    """The reference (tests/nfs/sqli_corpus.py): Python ``re`` over the normalized URL."""
    return reference_is_sqli(url, signatures)


def reference_verdict(payload: bytes | None, signatures: list[str]) -> str:
    target = reference_target(payload) if payload is not None else None
    if target is None:
        return "out"
    return "drop:sqli" if is_sqli(target, signatures) else "out"


ATTACKS = [
    b"/item.php?id=1%27%20OR%201=1--",
    b"/login?user=admin%27--&pass=x",
    b"/login?user=admin'+or+'a'='a",
    b"/list?cat=2+UNION+SELECT+username,password+FROM+users",
    b"/list?cat=2%20UnIoN/**/aLl/**/SeLeCt%20null,null",
    b"/p?id=1;DROP%20TABLE%20users%20",
    b"/p?id=1%20AND%20SLEEP(5)",
    b"/p?id=1+and+benchmark(5000000,md5(1))",
    b"/p?q=x%27;waitfor%20delay%20%270:0:5%27",
    b"/p?q=1+from+information_schema.tables",
    b"/p?id=%2527%20or%201=1",
    b"/p?id=1%20ORDER%20BY%205",
    b"/p?id=(select%20@@version)",
]
BENIGN = [
    b"/",
    b"/index.html",
    b"/union-station/selection.html",
    b"/search?q=rock+and+roll",
    b"/books?author=O%27Reilly",
    b"/tx/0x5c504ed432cb51138bcf09aa5e8a410dd4a1e204ef84bfed1be16dfba1b22060",
    b"/a%20b%2Fc?x=1&y=2",
    b"/select?from=union",
]


def test_attacks_are_dropped_and_benign_urls_pass() -> None:
    sigs = list(SQLI_SIGNATURES)
    assert all(is_sqli(u, sigs) for u in ATTACKS) and not any(is_sqli(u, sigs) for u in BENIGN)  # sanity
    frames = [get(u) for u in ATTACKS + BENIGN]
    run = run_kernel(ValidateUrl(), frames)
    assert run.verdicts == ["drop:sqli"] * len(ATTACKS) + ["out"] * len(BENIGN)
    assert run.drops["sqli"] == frames[: len(ATTACKS)]
    assert run.outputs["out"] == frames[len(ATTACKS):]
    assert run.counters == {"checked": len(frames), "not_request": 0}


def test_custom_signatures_case_insensitive_and_url_decoded() -> None:
    sigs = ["admin", r"\.\./", r"^/private", r"\.bak$"]
    urls = [b"/ADMIN/panel", b"/%61dmin", b"/static/%2e%2e/%2E%2E/etc/passwd", b"/x/../y", b"/private/x",
            b"/public/private", b"/db.BAK", b"/db.bak?download=1", b"/ok", b"/adm+in", b"/%2561dmin", b"/db.bak%"]
    frames = [get(u) for u in urls]
    run = run_kernel(ValidateUrl({"signatures": sigs}), frames)
    assert run.verdicts == [reference_verdict(frames[k][PAYLOAD_AT:], sigs) for k in range(len(urls))]
    # /%2561dmin is decoded twice; the stray '%' of /db.bak% is dropped, so the URL ends in .bak
    assert run.verdicts == ["drop:sqli"] * 5 + ["out", "drop:sqli", "out", "out", "out", "drop:sqli", "drop:sqli"]


# The request line and its variants: the injection follows a raw space, which used to end
# the target. Each has a benign twin with the same shape that must pass.
RAW_SPACE_LINES = [
    (b"GET /item?q=1' OR 'a'='a HTTP/1.1", b"GET /item?q=rock and roll HTTP/1.1"),
    (b"GET /item?q=1 UNION SELECT password FROM users HTTP/1.1", b"GET /item?q=union station HTTP/1.1"),
    (b"GET\t/item?q=1\tAND\t1=2 HTTP/1.0", b"GET\t/item?q=1\tand\t2 HTTP/1.0"),
    (b"GET /p?id=1;  DROP TABLE users   HTTP/1.1  ", b"GET /p?id=1; see drop shipping   HTTP/1.1  "),
    (b"GET /login?user=admin' --", b"GET /login?user=o'neil -- tom"),  # HTTP/0.9: no version
    (b"POST /a?x=1 HTTP/1.1 ' OR '1'='1 HTTP/1.1", b"POST /a?x=1 HTTP/1.1 or 1 HTTP/1.1"),
    (b"GET /s?q=x' or sleep(5)#", b"GET /s?q=x's sleep (5 hours)"),  # cut off: no line end
]


@pytest.mark.parametrize(("attack", "twin"), RAW_SPACE_LINES, ids=lambda b: b.decode("latin-1")[:40])
def test_raw_space_injections_are_dropped_and_their_twins_pass(attack: bytes, twin: bytes) -> None:
    sigs = list(SQLI_SIGNATURES)
    payloads = [attack + b"\r\nHost: x\r\n\r\n" if b"#" not in attack else attack, twin + b"\r\n\r\n"]
    assert [reference_verdict(p, sigs) for p in payloads] == ["drop:sqli", "out"]
    run = run_kernel(ValidateUrl(), [tcp(p) for p in payloads])
    assert run.verdicts == ["drop:sqli", "out"]
    assert run.counters == {"checked": 2, "not_request": 0}


# One injection in every form the issue names; each must be dropped (and the decoded text is
# checked against the reference normalizer in tests/dataplane/test_dfa.py).
EVASIONS = [
    b"/p?id=1%27%20OR%20%271%27%3D%271",  # %XX
    b"/p?id=1'+OR+'1'='1",  # + as space
    b"/p?id=1%2527%2520OR%2520%25271%2527%253D%25271",  # double encoding
    b"/p?id=1%u0027%u0020OR%u0020%u00271%u0027=%u00271",  # %uXXXX
    b"/p?id=1' oR '1'='1",  # mixed case
    b"/p?id=1/**/UnIoN/**/SeLeCt/**/password/**/FROM/**/users",  # comments as spaces
    b"/p?id=1%00'%00OR%00'1'='1",  # NUL bytes
    b"/p?id=1%EF%BC%87 OR %EF%BC%871%EF%BC%87=%EF%BC%871",  # fullwidth apostrophes
    b"/p?id=%S%E%L%E%C%T%20%S%L%E%E%P(5)",  # percentage (ASP)
    b"/p?id=1 UNION--x%0ASELECT 1",  # space2dash
]


def test_every_evasion_form_is_dropped() -> None:
    sigs = list(SQLI_SIGNATURES)
    assert all(is_sqli(u, sigs) for u in EVASIONS)
    run = run_kernel(ValidateUrl(), [get(u) for u in EVASIONS])
    assert run.verdicts == ["drop:sqli"] * len(EVASIONS)


def test_only_the_request_target_is_inspected() -> None:
    sigs = list(SQLI_SIGNATURES)
    frames = [tcp(b"POST /login HTTP/1.1\r\nContent-Length: 20\r\n\r\nuser=a' or 1=1--"),
              tcp(b"GET /ok HTTP/1.1\r\nReferer: /x?id=1 union select 1\r\n\r\n"),
              tcp(b"HTTP/1.1 200 OK\r\n\r\n' or 1=1--"),
              tcp(b"x' union select password from users"),
              tcp(b"get /x?id=1+union+select+1 HTTP/1.1\r\n\r\n"),
              tcp(b"")]
    run = run_kernel(ValidateUrl(), frames)
    assert run.verdicts == ["out"] * len(frames)
    assert run.verdicts == [reference_verdict(f[PAYLOAD_AT:], sigs) for f in frames]
    assert run.counters == {"checked": 2, "not_request": 4}


def test_encapsulations_and_packets_without_a_request_line() -> None:
    req = Raw(b"GET /p?id=1%20union%20select%201 HTTP/1.1\r\n\r\n")
    dropped = [Ether() / Dot1Q(vlan=3) / IP() / TCP() / req, Ether() / IP(options=[IPOption_RR()]) / TCP() / req,
               Ether() / IP(flags="MF") / TCP() / req, Ether() / IP() / TCP(options=[("MSS", 1400)]) / req]
    passed = [Ether() / IP(frag=5, proto=6) / Raw(bytes(TCP() / req)), Ether() / IP() / UDP(dport=80) / req,
              Ether() / IP(ihl=2) / TCP() / req, Ether() / Dot1Q() / Dot1Q() / IP() / TCP() / req,
              Ether(type=0x86DD) / Raw(bytes(IP() / TCP() / req))]
    frames = [bytes(p) for p in dropped + passed]
    run = run_kernel(ValidateUrl(), frames)
    assert run.verdicts == ["drop:sqli"] * len(dropped) + ["out"] * len(passed)
    assert run.outputs["out"] == frames[len(dropped):]
    assert run.counters == {"checked": len(dropped), "not_request": len(passed)}


def test_truncated_frames_are_judged_on_what_is_there() -> None:
    sigs = list(SQLI_SIGNATURES)
    full = get(b"/item?id=7%20union%20select%20card%20from%20cards--")
    frames = [full[:k] for k in range(len(full) + 1)]
    run = run_kernel(ValidateUrl(), frames)
    expected = [reference_verdict(f[PAYLOAD_AT:] if len(f) >= PAYLOAD_AT else None, sigs) for f in frames]
    assert run.verdicts == expected
    assert "drop:sqli" in expected and expected[-1] == "drop:sqli" and expected[PAYLOAD_AT + 20] == "out"
    assert run.counters["checked"] + run.counters["not_request"] == len(frames)
    assert run.counters["not_request"] == PAYLOAD_AT + len(b"GET ")


@pytest.mark.parametrize(
    ("signatures", "named"),
    [(["ok", "a(?=b)"], "a(?=b)"), (["(unclosed"], "(unclosed"), ([r"(a)\1"], r"(a)\1"), (["x*"], "x*"),
     (["caf\u00e9"], "caf\u00e9"), (["a^b"], "a^b")],
)
def test_unsupported_signature_is_a_config_error_naming_it(signatures: list[str], named: str) -> None:
    with pytest.raises(NFConfigError, match=f"ValidateUrl config: signatures: .*{re.escape(repr(named))}"):
        ValidateUrl({"signatures": signatures})


@pytest.mark.parametrize("config", [{"signatures": []}, {"signatures": "union"}, {"sigs": ["x"]}])
def test_bad_config_shape_is_rejected(config: dict[str, object]) -> None:
    with pytest.raises(NFConfigError, match="ValidateUrl config"):
        ValidateUrl(config)


def test_labels_counters_descriptor() -> None:
    nf = ValidateUrl()
    assert nf.config.signatures == list(SQLI_SIGNATURES)
    assert nf.counter_names() == ("checked", "not_request")
    assert ValidateUrl.verdict_names() == ("out", "drop:sqli")
    d = ValidateUrl.descriptor
    assert d.read_only and d.may_drop
    assert all(ValidateUrl.doc_sections()[s] for s in DOC_SECTIONS)
