"""Packet contents: what a µNF reads and writes inside a frame, callable from numba code.

Bottom layer, beside :mod:`micronf.dataplane` (which owns memory: segments, pool, rings): nothing here
imports ports, io, runtime, nfs or the agent.

* :mod:`~micronf.packet.headers` — Ethernet/802.1Q/IPv4/TCP/UDP offsets and fields, the 5-tuple;
* :mod:`~micronf.packet.checksum` — RFC 1071 sums and RFC 1624 incremental updates;
* :mod:`~micronf.packet.flowhash` — murmur3 flow hashes and the jump consistent hash;
* :mod:`~micronf.packet.rules` — the one 5-tuple rule model (Rx classifier and L3L4Filter);
* :mod:`~micronf.packet.http` — HTTP/1.x request-line parsing and the per-packet parse cache;
* :mod:`~micronf.packet.regex` / :mod:`~micronf.packet.dfa` — regex signatures compiled into one
  DFA and the kernels running it; :mod:`~micronf.packet.dfa_cache` keeps compiled tables on disk;
* :mod:`~micronf.packet.waf` — WAF normalization of a URL and the fused decode-and-match kernel;
* :mod:`~micronf.packet.sqli` — the default SQL-injection signatures (data for ValidateUrl);
* :mod:`~micronf.packet.jit` — the typed ``njit`` decorators the kernels above use.
"""
