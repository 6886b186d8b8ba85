"""Benchmark: SQL-injection signatures over HTTP request URLs — quality on a labelled corpus, and speed
of Python ``re``, the numba DFA and hyperscan.

Quality: recall (injections flagged) and false-positive rate (benign URLs flagged) of
:data:`micronf.packet.sqli.SQLI_SIGNATURES` on the labelled corpus of ``tests/nfs/sqli_corpus.py``
(sqlmap tamper forms and cheat-sheet payloads, raw spaces included; realistic benign URLs with SQL
words in ordinary use), through ValidateUrl's own kernel (``url_target_search``: WAF normalization
then the DFA). The Python reference (regex normalizer + ``re``) must agree on every URL. The goal of
issue 10 is recall >= 0.99 with at most 0.1 % false positives; missed injections (by tamper) and
false positives are listed.

Speed: packets per second (and ns per packet) for deciding, for each 200-byte HTTP-request-like L7
payload, whether the request-target (parsed as lenient servers do) matches once normalized as a WAF
does (20% of the payloads carry an injection, URL-encoded the way clients send it). Rows:

* ``re, per packet``: Python loop; the reference parse and normalizer of ``tests/nfs/sqli_corpus.py``,
  one combined alternation regex (``(?:p1)|(?:p2)|...``, ``re.I | re.S`` on bytes).
* ``re, match only``: the same regex over URLs extracted and normalized beforehand (an upper bound).
* ``numba, batch``: ONE call of a compiled loop over all packets: ``http_request_url`` then
  ``url_target_search`` (decoding, normalizing and matching), the way ValidateUrl's batch loop runs it.
* ``numba DFA, batch, raw URL``: ``dfa_search`` on the raw target (what normalization costs).
* ``hyperscan, match only``: ``hyperscan.Database.scan`` per packet over the pre-normalized URLs
  (block mode, CASELESS | DOTALL | SINGLEMATCH), when the ``hyperscan`` module is importable.
  Its ``$`` also matches before a final newline, so its count may differ by a hair.

Each row reports the median of ``--repeat`` timed passes and the number of packets flagged; the
numba and ``re`` rows must flag exactly the same packets (checked, exit status 1 otherwise, as for
a disagreement on the corpus). The header also gives the DFA's size and its cold build time.

Usage::

    python bench/dfa.py [--packets N] [--repeat R] [--sqli-fraction F] [--seed S] [--json]

``micronf`` is imported from the environment, else from ``src/`` next to this directory. The speed
part is a benchmark, not a test: numbers depend on the machine and its load (in the header).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import random
import re
import shlex
import statistics
import sys
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from _common import base_facts, package_version, text_table

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
SRC_DIR = REPO / "src"
PACKET_LEN = 200

# -- workload ----------------------------------------------------------------------------------
BENIGN_PATHS = (
    "/index.php", "/search", "/products/view", "/api/v1/users", "/blog/2020/05/union-station",
    "/static/js/app.min.js", "/cart/update", "/wiki/O%27Reilly_Media", "/news/selection-of-the-week",
    "/images/logo.png", "/account/orders", "/docs/information-schema.html",
)  # fmt: skip
# near misses on purpose: SQL words in ordinary queries ("rock and roll", "order by date"); a
# query that does say "union select" is flagged, as a WAF would
BENIGN_WORDS = (
    "rock", "and", "roll", "union", "station", "select", "best", "order", "by", "date", "price", "shoes",
    "drop", "down", "menu", "sleep", "tips", "o'neil", "tom", "jerry", "2020", "42", "caf%C3%A9",
)  # fmt: skip
ATTACKS = (
    "1' OR '1'='1", "1' or 1=1-- -", "x' AND 'a'='a", "1 UNION SELECT username,password FROM users",
    "1 union/**/all/**/select 1,2,3", "1;DROP TABLE users", "admin'--", "admin'#", "1 AND SLEEP(5)",
    "1 and benchmark(5000000,md5(1))", "1;waitfor delay '0:0:5'--",
    "1 and 1=2 union select table_name from information_schema.tables",
    "-1 union select 0x61646d696e2d70617373", "1/*!50000union*/ select 1", "1 order by 5--",
    "(select load_file('/etc/passwd'))", "1;exec master..xp_cmdshell 'dir'", "1 and @@version>0",
    "1%27 or 1=1", "concat(0x3a,user())",
)  # fmt: skip
METHODS = ("GET", "GET", "GET", "GET", "POST", "HEAD", "PUT")
HEADERS = "Host: www.example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\nAccept: */*\r\nX-Pad: "


def _query(rng: random.Random) -> str:
    params = []
    for k in rng.sample(("id", "q", "page", "sort", "lang", "ref", "s"), rng.randint(1, 3)):
        words = [rng.choice(BENIGN_WORDS) for _ in range(rng.randint(1, 3))]
        params.append(f"{k}={'+'.join(words)}" if k in ("q", "s") else f"{k}={rng.randint(0, 9999)}")
    return "&".join(params)


def _encode_attack(rng: random.Random, attack: str) -> str:
    enc = rng.choice((urllib.parse.quote, urllib.parse.quote_plus, lambda s: s.replace(" ", "%20")))
    return str(enc(attack))


def make_packets(n: int, sqli_fraction: float, seed: int) -> list[bytes]:
    """``n`` payloads of exactly :data:`PACKET_LEN` bytes: request line, headers, padding."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        path = rng.choice(BENIGN_PATHS)
        query = _query(rng)
        if rng.random() < sqli_fraction:
            query += f"&id={_encode_attack(rng, rng.choice(ATTACKS))}"
        head = f"{rng.choice(METHODS)} {path}?{query} HTTP/1.1\r\n{HEADERS}".encode("latin-1")
        out.append((head + b"x" * PACKET_LEN)[:PACKET_LEN])
    return out


# -- the methods -------------------------------------------------------------------------------
def _oracle_regex(patterns: Sequence[str]) -> re.Pattern[bytes]:
    """One alternation with the DFA's semantics: bytes, re.I | re.S, a final ``$`` read as ``\\Z``."""
    parts = []
    for p in patterns:
        if p.endswith("$") and not p.endswith("\\$"):
            p = p[:-1] + r"\Z"
        parts.append(f"(?:{p})")
    return re.compile("|".join(parts).encode("ascii"), re.IGNORECASE | re.DOTALL)


def _corpus() -> Any:
    """``tests/nfs/sqli_corpus.py``: the labelled corpus and the Python reference."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return importlib.import_module("tests.nfs.sqli_corpus")


def _normalized_url(pkt: bytes) -> bytes | None:
    ref = _corpus()
    target = ref.reference_target(pkt)
    return None if target is None else bytes(ref.reference_normalize(target))


def re_per_packet(pkts: Sequence[bytes], rx: re.Pattern[bytes]) -> int:
    ref = _corpus()
    hits = 0
    for p in pkts:
        target = ref.reference_target(p)
        if target is not None and rx.search(ref.reference_normalize(target)):
            hits += 1
    return hits


def re_match_only(urls: Sequence[bytes | None], rx: re.Pattern[bytes]) -> int:
    return sum(1 for u in urls if u is not None and rx.search(u))


def make_batches() -> tuple[Any, Any]:
    """Compiled loops over a batch: the request-target, then ValidateUrl's search / the raw DFA on it."""
    from numba import njit

    from micronf.packet.dfa import dfa_search
    from micronf.packet.http import http_request_url
    from micronf.packet.waf import url_target_search

    def normalized(cmap: Any, table: Any, params: Any, buf: Any, offsets: Any, lengths: Any, out: Any) -> int:
        hits = 0
        for i in range(offsets.shape[0]):
            b = offsets[i]
            u0, u1 = http_request_url(buf, b, b + lengths[i])
            hit = u0 >= 0 and url_target_search(cmap, table, params, buf, u0, u1)
            out[i] = hit
            hits += hit
        return hits

    def raw(table: Any, accept: Any, start: int, buf: Any, offsets: Any, lengths: Any, out: Any) -> int:
        hits = 0
        for i in range(offsets.shape[0]):
            b = offsets[i]
            u0, u1 = http_request_url(buf, b, b + lengths[i])
            hit = u0 >= 0 and dfa_search(table, accept, start, buf, u0, u1)
            out[i] = hit
            hits += hit
        return hits

    return njit(nogil=True)(normalized), njit(nogil=True)(raw)


def corpus_quality(patterns: tuple[str, ...]) -> dict[str, Any]:
    """Recall and false positives of ``patterns`` on the labelled corpus, through ValidateUrl's kernel."""
    from micronf.packet.dfa import compile_patterns
    from micronf.packet.waf import url_dfa, url_target_search

    ref = _corpus()
    attacks: list[tuple[bytes, str]] = ref.injections()
    clean: list[bytes] = ref.benign()
    u = url_dfa(compile_patterns(patterns))

    def flagged(url: bytes) -> bool:
        buf = np.frombuffer(url, dtype=np.uint8)
        return bool(url_target_search(u.cmap, u.table, u.params, buf, 0, len(url)))

    hit_a = [flagged(url) for url, _ in attacks]
    hit_b = [flagged(url) for url in clean]
    disagree = sum(h != ref.reference_is_sqli(url, patterns) for (url, _), h in zip(attacks, hit_a, strict=True))
    disagree += sum(h != ref.reference_is_sqli(url, patterns) for url, h in zip(clean, hit_b, strict=True))
    recall = sum(hit_a) / len(attacks)
    fp_rate = sum(hit_b) / len(clean)
    return {
        "injections": len(attacks),
        "caught": sum(hit_a),
        "recall": recall,
        "benign": len(clean),
        "false_positives": sum(hit_b),
        "fp_rate": fp_rate,
        "goal_met": recall >= 0.99 and fp_rate <= 0.001,
        "tampers": len({label.split("/")[0] for _, label in attacks}),
        "missed": [f"{lbl}: {url.decode('latin-1')}" for (url, lbl), h in zip(attacks, hit_a, strict=True) if not h],
        "false_positive_urls": [url.decode("latin-1") for url, h in zip(clean, hit_b, strict=True) if h],
        "reference_disagrees": disagree,
    }


def hyperscan_scanner(patterns: Sequence[str]) -> Callable[[Sequence[bytes | None]], int] | None:
    """A per-packet hyperscan loop over decoded URLs, or None when hyperscan is not importable."""
    try:
        hs = importlib.import_module("hyperscan")
    except ImportError:
        return None
    db = hs.Database(mode=hs.HS_MODE_BLOCK)
    flags = hs.HS_FLAG_CASELESS | hs.HS_FLAG_DOTALL | hs.HS_FLAG_SINGLEMATCH
    db.compile(
        expressions=[p.encode("ascii") for p in patterns],
        ids=list(range(len(patterns))),
        elements=len(patterns),
        flags=[flags] * len(patterns),
    )
    found: list[int] = []

    def on_match(pid: int, start: int, end: int, flags: int, ctx: Any) -> None:
        found.append(pid)

    def scan(urls: Sequence[bytes | None]) -> int:
        hits = 0
        for u in urls:
            if u is None:
                continue
            found.clear()
            db.scan(u, match_event_handler=on_match)
            hits += bool(found)
        return hits

    return scan


# -- measuring ---------------------------------------------------------------------------------
@dataclass
class Row:
    method: str
    packets: int
    seconds: list[float]  # wall clock per pass
    cpu_seconds: list[float]  # process CPU time per pass (less sensitive to a busy machine)
    flagged: int
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def mpps(self) -> float:
        return self.packets / self.median / 1e6

    @property
    def ns_per_packet(self) -> float:
        return self.median / self.packets * 1e9

    @property
    def cpu_ns_per_packet(self) -> float:
        return statistics.median(self.cpu_seconds) / self.packets * 1e9

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "median_s": self.median,
            "mpps": self.mpps,
            "ns_per_packet": self.ns_per_packet,
            "cpu_ns_per_packet": self.cpu_ns_per_packet,
        }


def timed(fn: Callable[[], int], repeat: int) -> tuple[list[float], list[float], int]:
    """``(wall seconds, CPU seconds, result)`` of ``repeat`` calls of ``fn``."""
    wall, cpu, result = [], [], -1
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        result = fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return wall, cpu, result


def _ensure_micronf_importable() -> None:
    if importlib.util.find_spec("micronf") is None:
        sys.path.insert(0, str(SRC_DIR))


def machine_facts() -> dict[str, Any]:
    return base_facts() | {"interegular": package_version("interegular"), "hyperscan": package_version("hyperscan")}


def run(args: argparse.Namespace) -> tuple[list[Row], dict[str, Any]]:
    dfa_mod = importlib.import_module("micronf.packet.dfa")
    regex_mod = importlib.import_module("micronf.packet.regex")
    waf_mod = importlib.import_module("micronf.packet.waf")
    patterns = tuple(importlib.import_module("micronf.packet.sqli").SQLI_SIGNATURES)
    t0 = time.perf_counter()
    regex_mod.build_tables(patterns, True, 20000)  # cold: no lru / disk cache
    build_s = time.perf_counter() - t0
    dfa = dfa_mod.compile_patterns(patterns)
    u = waf_mod.url_dfa(dfa)
    info = {
        "signatures": len(patterns),
        "dfa_states": dfa.n_states,
        "table_bytes": dfa.table.nbytes,
        "url_table_bytes": u.table.nbytes,
        "cold_build_s": round(build_s, 3),
        "corpus": corpus_quality(patterns),
    }

    pkts = make_packets(args.packets, args.sqli_fraction, args.seed)
    buf = np.frombuffer(b"".join(pkts), dtype=np.uint8)
    offsets = np.arange(len(pkts), dtype=np.int64) * PACKET_LEN
    lengths = np.full(len(pkts), PACKET_LEN, dtype=np.int64)
    out = np.zeros(len(pkts), dtype=np.bool_)
    urls = [_normalized_url(p) for p in pkts]
    rx = _oracle_regex(patterns)
    n_py = min(len(pkts), args.python_packets)
    rows: list[Row] = []

    expected = np.array([u is not None and rx.search(u) is not None for u in urls], dtype=np.bool_)

    def add(method: str, packets: int, fn: Callable[[], int], note: str = "") -> Row:
        wall, cpu, hits = timed(fn, args.repeat)
        rows.append(Row(method, packets, wall, cpu, hits, note))
        return rows[-1]

    row = add("re, per packet (parse + normalize + match)", n_py, lambda: re_per_packet(pkts[:n_py], rx))
    if row.flagged != int(expected[:n_py].sum()):
        row.note = "MISMATCH with match-only"
    add("re, match only (pre-normalized URLs)", n_py, lambda: re_match_only(urls[:n_py], rx))

    normalized, raw = make_batches()
    for name, batch, arrays in (
        ("numba, batch (parse + normalize + match: ValidateUrl's path)", normalized, (u.cmap, u.table, u.params)),
        ("numba DFA, batch, raw URL (no normalization)", raw, (dfa.table, dfa.accept, dfa.start)),
    ):
        batch(*arrays, buf[:PACKET_LEN], offsets[:1], lengths[:1], out[:1])  # compile

        def call(batch: Any = batch, arrays: Any = arrays) -> int:
            return int(batch(*arrays, buf, offsets, lengths, out))

        row = add(name, len(pkts), call)
        if batch is normalized:
            wrong = int(np.count_nonzero(out != expected))
            row.note = "same verdicts as re" if wrong == 0 else f"MISMATCH with re on {wrong} packets"

    scan = hyperscan_scanner(patterns)
    if scan is None:
        rows.append(Row("hyperscan", 0, [], [], -1, note="skipped: hyperscan not importable"))
    else:
        add("hyperscan, match only (pre-normalized URLs)", n_py, lambda: scan(urls[:n_py]))
    return rows, info


def format_table(
    rows: Sequence[Row], facts: dict[str, Any], info: dict[str, Any], command: str, args: argparse.Namespace
) -> str:
    lines = [
        f"# machine: {facts['cpu']}, nproc {facts['nproc']}, load avg {facts['loadavg_at_start'][0]}, "
        f"kernel {facts['kernel']}",
        f"# python {facts['python']}, numpy {facts['numpy']}, numba {facts['numba']}, "
        f"interegular {facts['interegular']}, hyperscan {facts['hyperscan']}",
        f"# command: {command}",
        f"# workload: {args.packets} payloads of {PACKET_LEN} B, {args.sqli_fraction:.0%} with SQLi, seed {args.seed}; "
        f"Python rows over the first {min(args.packets, args.python_packets)}; median of {args.repeat} passes",
        f"# DFA: {info['signatures']} signatures -> {info['dfa_states']} states "
        f"({info['table_bytes'] / 1024:.0f} KiB dense table, {info['url_table_bytes'] / 1024:.0f} KiB as ValidateUrl "
        f"walks it), cold build {info['cold_build_s']:.2f} s",
        *corpus_lines(info["corpus"]),
        "# Mpps and ns/packet: wall clock; CPU ns/packet: process CPU time (steadier on a busy machine)",
    ]
    header = ("method", "packets", "Mpps", "ns/packet", "CPU ns/packet", "flagged", "note")
    body = [
        (
            r.method,
            str(r.packets),
            f"{r.mpps:.2f}" if r.packets else "-",
            f"{r.ns_per_packet:.0f}" if r.packets else "-",
            f"{r.cpu_ns_per_packet:.0f}" if r.packets else "-",
            str(r.flagged) if r.packets else "-",
            r.note,
        )
        for r in rows
    ]
    return "\n".join([*lines, *text_table(header, body, right={1, 2, 3, 4, 5})])


def corpus_lines(c: dict[str, Any]) -> list[str]:
    """The corpus figures as report lines: recall, false positives, what was missed or flagged."""
    lines = [
        f"# corpus (tests/nfs/sqli_corpus.py): recall {c['recall']:.4f} ({c['caught']}/{c['injections']} injections, "
        f"{c['tampers']} tamper forms), false positives {c['fp_rate']:.2%} ({c['false_positives']}/{c['benign']} "
        f"benign); goal recall >= 0.99 and FP <= 0.1 %: {'met' if c['goal_met'] else 'NOT met'}",
    ]
    if c["reference_disagrees"]:
        lines.append(f"# !!! MISMATCH: the Python reference disagrees on {c['reference_disagrees']} corpus URLs")
    lines += [f"#   missed  {m}" for m in c["missed"]]
    lines += [f"#   flagged {u}" for u in c["false_positive_urls"]]
    return lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="SQLi signatures over HTTP URLs: Python re vs numba DFA vs hyperscan")
    ap.add_argument("--packets", type=int, default=200_000, help="payloads for the numba rows (default 200000)")
    ap.add_argument(
        "--python-packets", type=int, default=50_000, help="payloads for the per-packet Python rows (default 50000)"
    )
    ap.add_argument("--repeat", type=int, default=5, help="timed passes per row, median reported (default 5)")
    ap.add_argument("--sqli-fraction", type=float, default=0.2, help="share of payloads with SQLi (default 0.2)")
    ap.add_argument("--seed", type=int, default=1, help="workload seed (default 1)")
    ap.add_argument("--json", action="store_true", help="print a JSON document instead of the table")
    args = ap.parse_args(argv)
    if args.packets < 1 or args.python_packets < 1 or args.repeat < 1 or not 0 <= args.sqli_fraction <= 1:
        ap.error("need --packets >= 1, --python-packets >= 1, --repeat >= 1, 0 <= --sqli-fraction <= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join([Path(sys.executable).name, *sys.argv] if argv is None else ["dfa.py", *argv])
    _ensure_micronf_importable()
    facts = machine_facts()
    rows, info = run(args)
    mismatch = any("MISMATCH" in r.note for r in rows) or info["corpus"]["reference_disagrees"] > 0
    if args.json:
        print(
            json.dumps(
                {
                    "command": command,
                    "machine": facts,
                    "dfa": info,
                    "args": vars(args),
                    "rows": [r.to_json() for r in rows],
                    "mismatch": mismatch,
                },
                indent=2,
            )
        )
    else:
        print(format_table(rows, facts, info, command, args))
        if mismatch:
            print("# !!! the numba DFA and Python re disagree: see the note column")
    return 1 if mismatch else 0


if __name__ == "__main__":
    sys.exit(main())
