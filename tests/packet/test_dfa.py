"""Tests for ``micronf.packet.dfa`` against Python's ``re`` as the independent oracle.

The oracle for a pattern ``p`` and an input ``data`` is ``re.search(p, data, re.I | re.S)`` over
``bytes`` (a final ``$`` rewritten to ``\\Z``, the documented semantics); the URL-decoding kernel is
checked against ``urllib.parse.unquote_to_bytes(data.replace(b"+", b" "))``, which is what
``unquote_plus`` does, without its UTF-8 round trip. Inputs: hand-picked benign and malicious
URLs, and seeded random strings built from an alphabet biased towards the patterns' characters.
Window tests place the input inside a larger array whose outside bytes would change the result.
"""

from __future__ import annotations

import random
import re
import urllib.parse
from collections.abc import Sequence

import numpy as np
import pytest

from micronf.packet import dfa as dfa_module
from micronf.packet.dfa import Dfa, compile_patterns, dfa_search, dfa_search_urldecoded
from micronf.packet.http import HTTP_METHODS, http_request_url, http_target_end
from micronf.packet.regex import ACCEPT_NOW
from micronf.packet.sqli import SQLI_SIGNATURES
from micronf.packet.waf import url_dfa, url_target_search, waf_normalize
from tests.nfs.sqli_corpus import reference_is_sqli, reference_normalize, reference_target

# --------------------------------------------------------------------------- oracle


def oracle_regex(pattern: str, ignore_case: bool = True) -> re.Pattern[bytes]:
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern.encode("ascii"), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def oracle(patterns: Sequence[str], data: bytes, ignore_case: bool = True) -> bool:
    return any(oracle_regex(p, ignore_case).search(data) for p in patterns)


def url_decode(data: bytes) -> bytes:
    return urllib.parse.unquote_to_bytes(data.replace(b"+", b" "))


def arr(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8).copy()


def search(dfa: Dfa, data: bytes, begin: int = 0, end: int | None = None, decode: bool = False) -> bool:
    buf = arr(data)
    kernel = dfa_search_urldecoded if decode else dfa_search
    return bool(kernel(dfa.table, dfa.accept, dfa.start, buf, begin, len(data) if end is None else end))


# --------------------------------------------------------------------------- patterns and inputs

# One or more patterns per supported construct (module docstring, "SUPPORTED REGEX SUBSET"), each
# with strings that match it: they are mixed into the random inputs so both outcomes occur.
CONSTRUCTS: dict[str, list[str]] = {
    # literals, case
    "abc": ["abc", "ABC"],
    "SeLeCt": ["select", "SELECT"],
    # escapes
    r"a\.b": ["a.b"],
    r"\(x\)": ["(x)", "(X)"],
    r"\*\+\?": ["*+?"],
    r"\\": ["\\"],
    r"a\/b": ["a/b"],
    r"\x41\x2d": ["A-", "a-"],
    r"a\tb|c\nd": ["a\tb", "c\nd"],
    r"\x00\x7f": ["\x00\x7f"],
    r"\{1\}": ["{1}"],
    r"\a\f\v\r": ["\a\f\v\r"],
    # classes
    r"\d\d": ["12", "09"],
    r"x\D": ["xa", "x\n"],
    r"\s\S": [" a", "\tb", "\x0b1"],
    r"\w\W": ["a-", "_ ", "9\xff"],
    r"[abc]x": ["ax", "CX"],
    r"[^abc]x": ["dx", "\x80x"],
    r"[a-c0-2]{2}": ["a0", "c2", "bB"],
    r"[\d\s]z": ["1z", " z"],
    r"[\]b]": ["]", "b"],
    r"[-a]b": ["-b", "ab"],
    r"[a-]c": ["-c", "ac"],
    r"[^\w]%": ["-%", "\n%"],
    # dot (any byte, newline included)
    "a.c": ["abc", "a\nc", "a\xffc"],
    "b.*c": ["bc", "b\n\nxc"],
    # quantifiers
    "ab*c": ["ac", "abbbc"],
    "ab+c": ["abc", "abbbc"],
    "ab?c": ["ac", "abc"],
    "a{2}": ["aa"],
    "b{2,}c": ["bbc", "bbbbc"],
    "c{,2}x": ["x", "ccx"],
    "ab{1,3}c": ["abc", "abbbc"],
    "a.*?b": ["ab", "a--b"],
    "x{2,3}?y": ["xxy", "xxxy"],
    # alternation and groups
    "cat|dog": ["cat", "DOG"],
    "(ab)+c": ["abc", "ababc"],
    "(?:ab|cd)e": ["abe", "cde"],
    "(?P<name>x+)y": ["xy", "xxxy"],
    "a(b|c(d|e))f": ["abf", "acdf", "acef"],
    # anchors, relative to the window
    "^abc": ["abc"],
    "xyz$": ["xyz"],
    "^a.*z$": ["az", "a\nz"],
    r"\Aab": ["ab"],
    r"ab\Z": ["ab"],
    "^$": [""],
    "^(?:a|b)c": ["ac", "bc"],
    r"\$$": ["$"],
}

# Characters the constructs use, plus the URL-encoding characters, case variants and odd bytes.
CONSTRUCT_ALPHABET = [*"abcdefxyzABCXYZ0123456789.()*+?\\/-_{}[]^$%' \t\n", "\x00", "\xff", "\x80", "ab", "%41"]
SQLI_ALPHABET = [
    *"'\"();,=<>-#/*!%+ _@.\t\n0123456789abcdefxORSTU",
    "union", "UNION", "select", "SeLeCt", "all", " or ", " and ", "'", "1=1", "'1'='1", "--", "-- -", "/*",
    "*/", "/*!", "0x", "0x61646d696e", "%27", "%2527", "%20", "%2", "%", "+", "%2d%2d", "drop ", ";", "sleep(",
    "benchmark(", "waitfor delay '", "information_schema", "@@version", " order by ", "exec ", "xp_cmdshell",
    "load_file(", "into outfile", "char(", "concat(", "(select ", "%0a",
]  # fmt: skip


def random_strings(
    alphabet: Sequence[str], n: int, seed: int, max_tokens: int = 16, samples: Sequence[str] = ()
) -> list[bytes]:
    """``n`` strings of random tokens; with ``samples``, often starting or ending with one."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        toks = [rng.choice(alphabet) for _ in range(rng.randint(0, max_tokens))]
        if rng.random() < 0.1:  # some fully random bytes too
            toks.append(bytes(rng.randrange(256) for _ in range(rng.randint(1, 6))).decode("latin-1"))
        if samples and rng.random() < 0.3:
            toks.insert(0, rng.choice(samples))
        if samples and rng.random() < 0.3:
            toks.append(rng.choice(samples))
        if samples and rng.random() < 0.3:
            toks.insert(rng.randint(0, len(toks)), rng.choice(samples))
        out.append("".join(toks).encode("latin-1"))
    return out


MALICIOUS_URLS = [
    b"/index.php?id=1' OR '1'='1",
    b"/index.php?id=1%27%20OR%20%271%27%3D%271",
    b"/login?user=x'+or+'a'='a",
    b"/search?q=union%20select%20password%20from%20users",
    b"/a?b=1;DROP TABLE users",
    b"/a?b=1%3BDROP%20TABLE%20users",
    b"/item?id=1+AND+1=1",
    b"/item?id=1 UNION/**/ALL/**/SELECT 1,2,3",
    b"/item?id=-1+union+all+select+1,2",
    b"/item?id=1+union(select+1)",
    b"/login?user=admin'--",
    b"/login?user=admin'%23",
    b"/p?id=1--",
    b"/p?id=1--+-",
    b"/p?id=1;WAITFOR DELAY '0:0:5'--",
    b"/p?id=1 AND SLEEP(5)",
    b"/p?id=1%20and%20pg_sleep(10)",
    b"/p?id=BENCHMARK(1000000,MD5(1))",
    b"/p?id=1+and+1=2+union+select+table_name+from+information_schema.tables",
    b"/p?id=-1 union select 0x61646d696e2d70617373",
    b"/p?id=1/*!50000union*/+select+1",
    b"/p?id=1 order by 5",
    b"/p?id=(select load_file('/etc/passwd'))",
    b"/p?id=1 into outfile '/tmp/x'",
    b"/p?id=1;exec master..xp_cmdshell 'dir'",
    b"/p?id=@@version",
    b"/p?id=1%2527%20or%20%25271%2527%3d%25271",  # double-encoded ' or '1'='1
    b"/p?name=x'; select 1",
    b"/p?id=concat(0x3a,user())",
    b"/p?id=1 OR 2>1",
]
BENIGN_URLS = [
    b"/",
    b"/index.php?id=42",
    b"/union-station/selection.html",
    b"/search?q=selection+of+union+jacks",
    b"/search?q=rock+and+roll",
    b"/search?q=1+or+2",
    b"/wiki/O%27Reilly_Media",
    b"/login?user=o'neil&remember=1",
    b"/page?name=d'artagnan+or+athos",
    b"/products?category=shoes&sort=price&order=desc",
    b"/faq?q=place+order+by+5pm",
    b"/orders?sort=created_at&order=asc",
    b"/blog/2020/05/how-to-drop-a-tablecloth",
    b"/sleep-tips/how-to-sleep-8-hours",
    b"/docs/information-schema.html",
    b"/static/app.min.js?v=0x1f",
    b"/tx/0x5c504ed432cb51138bcf09aa5e8a410dd4a1e204ef84bfed1be16dfba1b22060",
    b"/eth?tx=0x5c504ed432cb51138bcf09aa5e8a410dd4a1e204",
    b"/api/v1/users/123?fields=name,email",
    b"/a?b=c&d=e;f=g",
    b"/archive/post-1-of-3",
    b"/c%2B%2B/tutorial?topic=pointers+%26+references",
    b"/search?q=caf%C3%A9+%E2%82%AC",
    b"/mail?to=a@example.com",
]


@pytest.fixture(scope="module")
def sqli() -> Dfa:
    return compile_patterns(SQLI_SIGNATURES)


# --------------------------------------------------------------------------- structure


def test_default_dfa_structure(sqli: Dfa) -> None:
    n = sqli.n_states
    assert 1 < n <= 2000
    assert sqli.table.dtype == np.uint16 and sqli.table.shape == (n, 256)
    assert sqli.accept.dtype == np.uint8 and sqli.accept.shape == (n,)
    assert 0 <= sqli.start < n and int(sqli.table.max()) < n
    assert sqli.patterns == SQLI_SIGNATURES
    assert not sqli.table.flags.writeable and not sqli.accept.flags.writeable
    # case folded into the table: the kernel never sees a difference between A-Z and a-z
    upper = np.arange(ord("A"), ord("Z") + 1)
    assert np.array_equal(sqli.table[:, upper], sqli.table[:, upper + 32])
    # accepting states are absorbing (early exit is exact)
    now = np.nonzero(sqli.accept == ACCEPT_NOW)[0]
    assert now.size == 1
    assert np.all(sqli.table[now] == now[:, None])
    assert 1 <= len(SQLI_SIGNATURES) <= 24


def test_case_sensitive_mode() -> None:
    dfa = compile_patterns(["SeLeCt", r"[A-C]x", r"\x80\xff"], ignore_case=False)
    for data in (b"SeLeCt", b"select", b"SELECT", b"Bx", b"bx", b"\x80\xff", b"\x80\xfe"):
        assert search(dfa, data) == oracle(dfa.patterns, data, ignore_case=False), data
    assert search(dfa, b"SeLeCt") and not search(dfa, b"select")


def test_cached_per_process() -> None:
    a = compile_patterns(["abc", "d+e"])
    assert compile_patterns(("abc", "d+e")) is a
    assert compile_patterns(["abc", "d+e"], ignore_case=False) is not a


def test_disk_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    pats = ("disk+cache", r"x\d{3}y")
    dfa_module._compile_cached.cache_clear()
    first = compile_patterns(pats)
    files = list((tmp_path / "micronf-dfa").glob("*.npz"))
    assert len(files) == 1
    dfa_module._compile_cached.cache_clear()
    again = compile_patterns(pats)
    assert again is not first
    assert np.array_equal(again.table, first.table) and np.array_equal(again.accept, first.accept)
    assert again.start == first.start and again.patterns == pats
    files[0].write_bytes(b"not an npz file")  # a corrupt entry is rebuilt, not trusted
    dfa_module._compile_cached.cache_clear()
    rebuilt = compile_patterns(pats)
    assert np.array_equal(rebuilt.table, first.table)
    assert search(rebuilt, b"..DISKKKCACHE..") and search(rebuilt, b"x123y") and not search(rebuilt, b"x12y")
    dfa_module._compile_cached.cache_clear()


def test_dfa_validates_arrays() -> None:
    good = compile_patterns(["abc"])
    bad_table = np.array(good.table)
    bad_table[0, 0] = good.n_states  # out of range: a kernel would read past the table
    with pytest.raises(ValueError):
        Dfa(bad_table, good.accept, good.start, good.patterns)
    with pytest.raises(ValueError):
        Dfa(good.table.astype(np.int32), good.accept, good.start, good.patterns)
    with pytest.raises(ValueError):
        Dfa(good.table, good.accept, good.n_states, good.patterns)


# --------------------------------------------------------------------------- the default signatures


@pytest.mark.parametrize("url", MALICIOUS_URLS, ids=lambda u: u.decode("latin-1")[:50])
def test_default_signatures_flag_injections(sqli: Dfa, url: bytes) -> None:
    decoded = url_decode(url)
    assert oracle(SQLI_SIGNATURES, decoded), "the test URL itself should be an injection"
    assert search(sqli, url, decode=True)
    assert search(sqli, decoded) == oracle(SQLI_SIGNATURES, decoded)


@pytest.mark.parametrize("url", BENIGN_URLS, ids=lambda u: u.decode("latin-1")[:50])
def test_default_signatures_pass_benign_urls(sqli: Dfa, url: bytes) -> None:
    assert not oracle(SQLI_SIGNATURES, url_decode(url))
    assert not search(sqli, url, decode=True)
    # undecoded, %27 is still there (signature 20, meant for decoded URLs): same verdict as re
    assert search(sqli, url) == oracle(SQLI_SIGNATURES, url)


def test_default_signatures_match_re_on_random_strings(sqli: Dfa) -> None:
    strings = random_strings(SQLI_ALPHABET, 2000, seed=20200)
    raw_hits = dec_hits = 0
    for s in strings:
        expected = oracle(SQLI_SIGNATURES, s)
        assert search(sqli, s) == expected, s
        expected_dec = oracle(SQLI_SIGNATURES, url_decode(s))
        assert search(sqli, s, decode=True) == expected_dec, s
        raw_hits += expected
        dec_hits += expected_dec
    # the alphabet must exercise both outcomes, or the comparison proves little
    assert 200 < raw_hits < 1800 and 200 < dec_hits < 1800


# --------------------------------------------------------------------------- every construct


@pytest.mark.parametrize("pattern", list(CONSTRUCTS))
def test_construct_matches_re(pattern: str) -> None:
    samples = CONSTRUCTS[pattern]
    for sample in samples:  # the samples themselves are right
        assert oracle([pattern], sample.encode("latin-1")), sample
    dfa = compile_patterns([pattern])
    seed = sum(map(ord, pattern))
    strings = random_strings(CONSTRUCT_ALPHABET, 300, seed=seed, max_tokens=6, samples=samples)
    hits = 0
    for s in strings:
        expected = oracle([pattern], s)
        assert search(dfa, s) == expected, s
        assert search(dfa, s, decode=True) == oracle([pattern], url_decode(s)), s
        hits += expected
    assert 0 < hits < len(strings), "random strings must exercise both outcomes"


def test_construct_union_matches_re() -> None:
    patterns = list(CONSTRUCTS)
    samples = [x for xs in CONSTRUCTS.values() for x in xs]
    dfa = compile_patterns(patterns)
    for s in random_strings(CONSTRUCT_ALPHABET, 2000, seed=7, max_tokens=8, samples=samples):
        assert search(dfa, s) == oracle(patterns, s), s
        assert search(dfa, s, decode=True) == oracle(patterns, url_decode(s)), s


@pytest.mark.parametrize(
    ("pattern", "data", "expected"),
    [
        ("^abc", b"abcd", True),
        ("^abc", b"xabc", False),
        ("xyz$", b"axyz", True),
        ("xyz$", b"xyz\n", False),  # documented: $ is \Z (Python's $ would match here)
        ("xyz$", b"xyzz", False),
        ("^$", b"", True),
        ("^$", b"a", False),
        ("a.c", b"a\nc", True),  # dot matches newline
        ("SELECT", b"sElEcT", True),
        (r"\d", "\u0661".encode(), False),  # ASCII classes: an Arabic-Indic digit is not \d
        (r"\s", b"\x1c", False),  # str-mode re would call \x1c whitespace; bytes-mode (ours) does not
        (r"\w", b"\xe9", False),
        ("[^a]", b"A", False),  # negated classes fold case like re.I does
        ("ab", b"", False),
    ],
)
def test_semantics_examples(pattern: str, data: bytes, expected: bool) -> None:
    assert oracle([pattern], data) == expected
    assert search(compile_patterns([pattern]), data) == expected


# --------------------------------------------------------------------------- URL decoding


@pytest.mark.parametrize(
    ("data", "decoded"),
    [
        (b"%27", b"'"),
        (b"%2a%2A", b"**"),
        (b"a+b", b"a b"),
        (b"%2B", b"+"),  # a decoded '+' stays '+'
        (b"%2527", b"%27"),  # decoded once only
        (b"%", b"%"),
        (b"%2", b"%2"),
        (b"%zz", b"%zz"),
        (b"%%41", b"%A"),
        (b"%2%41", b"%2A"),
        (b"%4+", b"%4 "),
        (b"%00%ff", b"\x00\xff"),
    ],
)
def test_url_decoding_examples(data: bytes, decoded: bytes) -> None:
    assert url_decode(data) == decoded  # the oracle agrees with the documented rules
    dfa = compile_patterns(["^" + "".join(f"\\x{b:02x}" for b in decoded) + "$"], ignore_case=False)
    assert search(dfa, data, decode=True)
    assert not search(dfa, data + b"x", decode=True)


# --------------------------------------------------------------------------- windows and bounds


def test_kernels_never_read_outside_the_window() -> None:
    dfa = compile_patterns(["union select", "'", "^abc", "z--$"])
    cases = [
        # (buffer, begin, end, (raw, decoded) verdict on the window, (raw, decoded) on the whole buffer)
        (b"union select", 0, 6, (False, False), (True, True)),  # the keyword continues after end
        (b"union select", 6, 12, (False, False), (True, True)),  # ... or starts before begin
        (b"xxabc", 2, 5, (True, True), (False, False)),  # ^ is relative to begin
        (b"z--abc", 0, 3, (True, True), (False, False)),  # $ is relative to end
        (b"a%27", 0, 3, (False, False), (False, True)),  # '%2' at the end of the window stays literal
        (b"a%27", 0, 4, (False, True), (False, True)),
        (b"%27", 1, 3, (False, False), (False, True)),  # '27' without its '%'
        (b"'xyz", 1, 4, (False, False), (True, True)),
    ]
    for data, begin, end, inside, whole in cases:
        buf = arr(data)
        for k, (kernel, decode) in enumerate(((dfa_search, False), (dfa_search_urldecoded, True))):
            window = data[begin:end]
            assert oracle(dfa.patterns, url_decode(window) if decode else window) == inside[k]
            assert oracle(dfa.patterns, url_decode(data) if decode else data) == whole[k]
            assert kernel(dfa.table, dfa.accept, dfa.start, buf, begin, end) == inside[k], (data, begin, end, decode)
            assert kernel(dfa.table, dfa.accept, dfa.start, buf, 0, len(data)) == whole[k], (data, decode)


def test_kernels_clamp_the_window_to_the_array() -> None:
    dfa = compile_patterns(["union select"])
    parent = arr(b"union select")
    head, tail = parent[:6], parent[6:]  # views: reading past their shape would see the other half
    for kernel in (dfa_search, dfa_search_urldecoded):
        assert not kernel(dfa.table, dfa.accept, dfa.start, head, 0, 1000)
        assert not kernel(dfa.table, dfa.accept, dfa.start, tail, -6, 6)
        assert not kernel(dfa.table, dfa.accept, dfa.start, head, 5, 2)  # empty window
        assert kernel(dfa.table, dfa.accept, dfa.start, parent, -100, 1000)
    # a negative begin must not wrap around to the end of the array (numba indexes like Python)
    ba = compile_patterns(["ba"])
    for kernel in (dfa_search, dfa_search_urldecoded):
        assert not kernel(ba.table, ba.accept, ba.start, arr(b"ab"), -1, 2)
        assert kernel(ba.table, ba.accept, ba.start, arr(b"bab"), -1, 3)
    assert http_request_url(arr(b"GET /abc"), -5, 100) == (4, 8)
    assert http_request_url(arr(b"/x GET /abc"), -8, 100) == (-1, -1)


def test_random_windows_match_re(sqli: Dfa) -> None:
    rng = random.Random(99)
    for s in random_strings(SQLI_ALPHABET, 300, seed=3, max_tokens=24):
        buf = arr(b"union select ' or 1=1 --" + s + b"union select ' or 1=1")
        lo = 24 + rng.randint(0, len(s))
        hi = rng.randint(lo, 24 + len(s))
        window = bytes(buf[lo:hi])
        assert dfa_search(sqli.table, sqli.accept, sqli.start, buf, lo, hi) == oracle(SQLI_SIGNATURES, window)
        assert dfa_search_urldecoded(sqli.table, sqli.accept, sqli.start, buf, lo, hi) == oracle(
            SQLI_SIGNATURES, url_decode(window)
        )


# --------------------------------------------------------------------------- url_target_search


def target_search(dfa: Dfa, data: bytes, begin: int = 0, end: int | None = None) -> bool:
    u = url_dfa(dfa)
    return bool(url_target_search(u.cmap, u.table, u.params, arr(data), begin, len(data) if end is None else end))


def normalize(data: bytes) -> bytes:
    out = np.full(len(data) + 8, 0xEE, dtype=np.uint8)
    n = waf_normalize(arr(data), 0, len(data), out[:len(data)])
    assert np.all(out[len(data):] == 0xEE)  # nothing written past the window's length
    return bytes(out[:n])


def test_url_dfa_layout(sqli: Dfa) -> None:
    u = url_dfa(sqli)
    assert url_dfa(sqli) is u  # cached
    width = int(u.params[3]) + 1
    assert u.table.dtype == np.uint16 and u.table.shape == ((sqli.n_states + 2) * width,)
    assert np.all(u.table % width == 0)  # pre-multiplied row offsets
    assert width < 64  # byte classes: far fewer columns than 256
    assert u.cmap.shape == (256,)
    assert np.array_equal(u.cmap >> 15, [1 if c in b"%*\n" or c < 9 or 14 <= c < 32 or c >= 128 else 0
                                         for c in range(256)])  # the bytes that need the second pass
    assert not u.table.flags.writeable and not u.cmap.flags.writeable


# Each normalization the issue names, with what a WAF must see (hand-written expectations).
NORMALIZATION_FORMS = [
    (b"1%27%20OR%201%3D1", b"1' OR 1=1"),  # %XX
    (b"1'+OR+1=1", b"1' OR 1=1"),  # + is a space
    (b"1%2527%2520OR%25201=1", b"1' OR 1=1"),  # double encoding
    (b"1%u0027%u0020OR%u00201=1", b"1' OR 1=1"),  # IIS %uXXXX
    (b"%uFF07%uff1d", b"'="),  # ... fullwidth forms to ASCII
    (b"x%u4E2D", b"x\x80"),  # ... anything else to one non-ASCII byte
    (b"UnIoN SeLeCt", b"UnIoN SeLeCt"),  # mixed case: left to the case-insensitive DFA
    (b"UNION/**/SELECT", b"UNION SELECT"),  # comments as spaces
    (b"UNION/*abc*/ALL/*x*y*/SELECT", b"UNION ALL SELECT"),
    (b"1%00'%00OR%00 1=1%00", b"1'OR 1=1"),  # NUL bytes removed
    (b"%S%E%L%E%C%T", b"SELECT"),  # a '%' without hex digits is dropped (ASP: sqlmap percentage)
    (b"%EF%BC%87%C0%A7", b"''"),  # UTF-8 fullwidth and overlong forms of '
    (b"UNION--x%0ASELECT", b"UNION SELECT"),  # -- comment up to a LF (space2dash)
    (b"UNION%23x%0ASELECT", b"UNION SELECT"),  # # comment up to a LF (space2hash)
    (b"UNION%09SELECT%A0x%01y", b"UNION\tSELECT x y"),  # NBSP and control bytes are blanks
    (b"/*!50000UNION*/", b"/*!50000UNION*/"),  # kept: MySQL executes it (a signature flags it)
    (b"admin'/*", b"admin'/*"),  # unterminated: kept
    (b"id=1--", b"id=1--"),  # a final -- without LF: kept (a signature flags it)
    (b"%252527", b"%27"),  # decoded twice only
    (b"100%25", b"100"),
    (b"%2", b"2"),
    (b"", b""),
]


@pytest.mark.parametrize(("raw", "normalized"), NORMALIZATION_FORMS, ids=lambda x: x.decode("latin-1")[:30])
def test_waf_normalize_forms(raw: bytes, normalized: bytes) -> None:
    assert reference_normalize(raw) == normalized  # the reference agrees with the hand-written form
    assert normalize(raw) == normalized


def test_waf_normalize_matches_the_reference_on_random_strings() -> None:
    alphabet = [*SQLI_ALPHABET, "%00", "%25", "%2525", "%u0027", "%uFF07", "%U00", "%EF%BC%87", "%C0%A7", "%A0",
                "/**/", "/*", "*/", "%0A", "#", "--", "\xc0", "\xef\xbc", "\x00", "%%", "%2%"]
    for s in random_strings(alphabet, 1500, seed=12, max_tokens=20):
        assert normalize(s) == reference_normalize(s), s


def test_url_target_search_matches_re_on_the_normalized_target(sqli: Dfa) -> None:
    alphabet = [*SQLI_ALPHABET, " ", "\t", "%20", "%0d", "%", "%2", "+", "%2527", "/**/", "%00", "%u0027"]
    hits = 0
    for s in random_strings(alphabet, 800, seed=11, max_tokens=24):
        expected = reference_is_sqli(s, SQLI_SIGNATURES)
        assert target_search(sqli, s) == expected, s
        hits += expected
    assert 100 < hits < 700  # both outcomes are exercised


@pytest.mark.parametrize(
    ("patterns", "data", "expected"),
    [
        (["z--$"], b"/a?z--", True),  # $ at the end of the window
        (["z--$"], b"/a?z--%20", False),  # a decoded space is data: '$' is the end of the target
        (["z--$"], b"/a?z--x", False),
        (["^/adm"], b"/admin", True),
        (["^/adm"], b"x/admin", False),
        (["a b"], b"a+b", True),
        (["a b"], b"a%20b", True),
        (["a b"], b"a b", True),  # a raw space inside the window is part of the target
        (["'"], b"%2", False),  # '%' without two hex digits: dropped
        (["%"], b"%", False),
        (["%"], b"%25", False),  # ... also after the first decoding
        (["%"], b"%2525", True),
        (["\\+"], b"%2B", True),  # a decoded '+' is not a space
        (["'"], b"%27", True),
        (["'"], b"%2527", True),  # decoded twice
        (["union select"], b"UNION/**/SELECT", True),
        (["union select"], b"UN%00ION%20SEL%00ECT", True),
        (["x"], b"", False),
    ],
)
def test_url_target_search_examples(patterns: list[str], data: bytes, expected: bool) -> None:
    dfa = compile_patterns(patterns)
    assert reference_is_sqli(data, patterns) == expected
    assert target_search(dfa, data) == expected


def test_url_target_search_stays_in_its_window() -> None:
    dfa = compile_patterns(["union select", "b--$"])
    u = url_dfa(dfa)
    parent = arr(b"/union+select")
    head = parent[:8]  # a view: reading past its shape would see the rest
    assert not url_target_search(u.cmap, u.table, u.params, head, 0, 1000)
    assert url_target_search(u.cmap, u.table, u.params, parent, 0, 1000)
    assert not url_target_search(u.cmap, u.table, u.params, parent, 0, 8)
    assert url_target_search(u.cmap, u.table, u.params, arr(b"xb--x"), 1, 4)  # ends at end: '$' holds
    assert not url_target_search(u.cmap, u.table, u.params, arr(b"xb--"), -3, 3)  # begin clamped, not wrapped
    # the second pass (a comment here) works on its own copy of the window, not past it
    comment = arr(b"/union/**/select")
    assert url_target_search(u.cmap, u.table, u.params, comment, 0, 100)
    assert not url_target_search(u.cmap, u.table, u.params, comment[:12], 0, 100)


def test_url_dfa_falls_back_to_uint32_offsets() -> None:
    patterns = ["a.{10}a", "bcdefghijklmnopq"]  # 4100 states x 19 columns: offsets exceed 65535
    dfa = compile_patterns(patterns, max_states=10000)
    assert url_dfa(dfa).table.dtype == np.uint32
    for data in (b"/a0123456789a", b"/a012345678a", b"/xbcdefghijklmnopq", b"/xbcdefghijklmnop", b"/%61bbbbbbbbbbA"):
        assert target_search(dfa, data) == reference_is_sqli(data, patterns), data


# --------------------------------------------------------------------------- http_request_url


@pytest.mark.parametrize("method", HTTP_METHODS)
def test_http_request_url_methods(method: str) -> None:
    data = f"{method} /a/b?c=d HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    u0, u1 = http_request_url(arr(data), 0, len(data))
    assert data[u0:u1] == b"/a/b?c=d"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"GET /x HTTP/1.1\r\n", b"/x"),
        (b"GET /x\r\nHost: y", b"/x"),
        (b"GET /x\nHost: y", b"/x"),
        (b"GET /truncated?q=1", b"/truncated?q=1"),  # packet cut inside the URL
        (b"GET ", b""),
        (b"GET  /x", b"/x"),  # blanks before the target are skipped
        (b"OPTIONS * HTTP/1.1", b"*"),
        # lenient servers: raw spaces inside the target, TABs as spaces, blanks before the version
        (b"GET /item?q=1' OR 'a'='a HTTP/1.1\r\nHost: x\r\n", b"/item?q=1' OR 'a'='a"),
        (b"GET /a b c HTTP/1.0\r\n", b"/a b c"),
        (b"GET\t/a\tb\tHTTP/1.1\r\n", b"/a\tb"),
        (b"GET /a b   HTTP/1.1   \r\n", b"/a b"),
        (b"GET /a b HTTP/1.1", b"/a b"),  # cut right after the version
        (b"GET /a b HTTP/1.", b"/a b HTTP/1."),  # ... or inside it: no version, the target runs on
        (b"GET /a b\r\n", b"/a b"),  # HTTP/0.9: no version at all
        (b"GET /a HTTP/1.1x\r\n", b"/a HTTP/1.1x"),  # not a version at the end of the line
        (b"GET /a http/1.1\r\n", b"/a http/1.1"),
        (b"GET /a HTTP/1.1 HTTP/1.1\r\n", b"/a HTTP/1.1"),  # only the last one is the version
        (b"GET HTTP/1.1\r\n", b"HTTP/1.1"),  # no blank before it inside the target
        (b"GET /a\rb HTTP/1.1", b"/a"),  # a CR ends the line
        (b"get /x HTTP/1.1", None),  # methods are case-sensitive
        (b"GETX /x HTTP/1.1", None),
        (b"GE /x", None),
        (b"GET", None),  # cut before the space
        (b"GE", None),
        (b"", None),
        (b" GET /x", None),
        (b"FOO /x HTTP/1.1", None),
        (b"OPTIONSS /x", None),
        (b"GET\n/x", None),
        (b"HTTP/1.1 200 OK\r\n", None),  # a response
        (b"\x16\x03\x01\x02\x00", None),  # TLS
    ],
)
def test_http_request_url_cases(data: bytes, expected: bytes | None) -> None:
    assert reference_target(data) == expected  # the independent parse agrees with the table
    u0, u1 = http_request_url(arr(data), 0, len(data))
    if expected is None:
        assert (u0, u1) == (-1, -1)
    else:
        assert data[u0:u1] == expected


def test_http_request_url_matches_the_reference_on_random_lines() -> None:
    rng = random.Random(5)
    parts = [b"/a", b"?q=", b"1", b"'", b" ", b"\t", b"  ", b"HTTP/1.1", b"HTTP/2.0", b"HTTP/1.", b"x", b"\r\n",
             b"\n", b"\r", b"OR", b"%20"]
    for _ in range(2000):
        line = rng.choice([b"GET ", b"POST\t", b"PUT  ", b"GET"]) + b"".join(rng.choices(parts, k=rng.randint(0, 10)))
        u0, u1 = http_request_url(arr(line), 0, len(line))
        want = reference_target(line)
        assert (None if u0 < 0 else line[u0:u1]) == want, line


def test_http_request_url_stays_in_its_window() -> None:
    data = b"xxGET /abc HTTP/1.1\r\n"
    buf = arr(data)
    assert http_request_url(buf, 2, len(data)) == (6, 10)
    assert http_request_url(buf, 2, 8) == (6, 8)  # end cuts the URL: it stops at end
    assert http_request_url(buf, 2, 19) == (6, 10)  # the version ends exactly at end
    assert http_request_url(buf, 0, len(data)) == (-1, -1)  # the window starts with 'xx'
    assert http_request_url(buf, 2, 5) == (-1, -1)  # 'GET' without its space inside the window
    assert http_request_url(arr(b"GET /a b"), 0, 6) == (4, 6)
    post = arr(b"POST /p")
    assert http_request_url(post[:4], 0, 100) == (-1, -1)  # a view: the space lies past its end
    line = arr(b"GET /a HTTP/1.1")
    assert http_request_url(line[:14], 0, 100) == (4, 14)  # 'HTTP/1.' inside the view only: no version
    assert http_target_end(line, 4, 100) == 6


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        (r"(a)\1", "backreference"),
        (r"(?P<n>a)(?P=n)", "group extension"),
        ("a(?=b)", "lookaround"),
        ("a(?!b)", "lookaround"),
        ("(?<=a)b", "lookaround"),
        ("(?<!a)b", "lookaround"),
        (r"\bselect\b", "word boundaries"),
        (r"a\Bb", "word boundaries"),
        (r"a\Ab", "first/last token"),
        ("a^b", "only supported as the first"),
        ("a$b", "only supported as the first"),
        ("(^a)", "only supported as the first"),
        ("^a|b", "top-level '|'"),
        ("a|b$", "top-level '|'"),
        ("a++", "possessive"),
        ("a*+", "possessive"),
        ("a{2}+", "possessive"),
        ("(?>ab)", "atomic"),
        ("(?i)abc", "inline flags"),
        ("(?#note)abc", "comments"),
        ("(a)?(?(1)b|c)", "conditionals"),
        ("[]a]", "must be escaped as '\\]'"),
        ("a{", "must be escaped as '\\{'"),
        ("ax{}b", "must be escaped as '\\{'"),  # re: the literal 'x{}'; a naive parser: x{0}
        (r"\101", "octal"),
        (r"\0", "octal"),
        ("café", "non-ASCII"),
        (r"\xe9", "ignore_case=False"),
        ("a*", "empty string"),
        ("(x|)", "empty string"),
        ("^", "empty string"),
        ("a{100000}", "exceeds max_states"),
        ("(unclosed", "invalid regex"),
        ("[z-a]", "invalid regex"),
        ("*a", "invalid regex"),
    ],
)
def test_unsupported_patterns_raise_naming_the_pattern(pattern: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(pattern))) as info:
        compile_patterns(["fine", pattern])
    assert reason in str(info.value)


def test_kernel_stops_at_first_accepting_state() -> None:
    # a hand-made DFA whose accepting state is NOT absorbing: 'a' accepts, anything then leaves
    table = np.zeros((2, 256), dtype=np.uint16)
    table[0, ord("a")] = 1
    accept = np.array([0, ACCEPT_NOW], dtype=np.uint8)
    dfa = Dfa(table, accept, 0, ("a",))
    for kernel in (dfa_search, dfa_search_urldecoded):
        assert kernel(table, accept, 0, arr(b"xab"), 0, 3)  # True at 'a', 'b' is not looked at
        assert not kernel(table, accept, 0, arr(b"xb"), 0, 2)
    assert dfa.search(b"ab") and dfa.search_urldecoded(b"%61b") and not dfa.search(b"b")


def test_max_states_single_pattern_named() -> None:
    bad = "a.{12}b"  # the search DFA must remember the last 13 positions of 'a': 2^13 states
    with pytest.raises(ValueError, match=re.escape(repr(bad))) as info:
        compile_patterns(["ok", bad], max_states=2000)
    assert "max_states=2000" in str(info.value)
    assert compile_patterns(["ok", "a.{4}b"], max_states=2000).n_states < 2000


def test_max_states_union_reported() -> None:
    pats = ["a.{5}b", "c.{5}d"]  # each fits alone, their product does not
    alone = [compile_patterns([p], max_states=200).n_states for p in pats]
    assert max(alone) < 200
    with pytest.raises(ValueError, match="union of 2 patterns") as info:
        compile_patterns(pats, max_states=200)
    assert repr(pats[0]) in str(info.value)


def test_bad_arguments() -> None:
    with pytest.raises(TypeError):
        compile_patterns("abc")
    with pytest.raises(ValueError):
        compile_patterns([])
    with pytest.raises(ValueError):
        compile_patterns(["abc"], max_states=70000)
    with pytest.raises(TypeError):
        compile_patterns([b"abc"])  # type: ignore[list-item]
