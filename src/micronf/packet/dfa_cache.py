"""The on-disk cache of compiled DFA tables: building the default signatures costs 0.4-1.5 s per process.

Files are ``$NUMBA_CACHE_DIR/micronf-dfa/<key>.npz`` (no cache when ``NUMBA_CACHE_DIR`` is unset;
micronf sets it on import), keyed on the patterns, the options, the compiler's source
(:mod:`micronf.packet.regex`) and interegular's version, so any change of the compiler starts afresh.
A file that cannot be read or whose patterns differ is ignored (and rebuilt); writes are atomic.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import interegular
import numpy as np

from micronf.packet import regex
from micronf.packet.regex import Accept, Table

__all__ = ["cache_load", "cache_path", "cache_store"]

_CACHE_SUBDIR = "micronf-dfa"


def cache_path(patterns: tuple[str, ...], ignore_case: bool, max_states: int) -> Path | None:
    """Where the tables of these patterns and options are kept, or None when there is no cache dir."""
    root = os.environ.get("NUMBA_CACHE_DIR")
    if not root:
        return None
    h = hashlib.blake2b(digest_size=16)
    h.update(Path(regex.__file__).read_bytes())
    h.update(f"interegular={interegular.__version__};ignore_case={ignore_case};max_states={max_states}".encode())
    for p in patterns:
        h.update(b"\0" + p.encode())
    return Path(root) / _CACHE_SUBDIR / f"{h.hexdigest()}.npz"


def cache_load(path: Path, patterns: tuple[str, ...]) -> tuple[Table, Accept, int] | None:
    """``(table, accept, start)`` stored at ``path`` for ``patterns``; None if unreadable or for others.

    The arrays are not validated here: :class:`micronf.packet.dfa.Dfa` does that on construction.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            if tuple(str(p) for p in z["patterns"]) != patterns:
                return None
            table = np.ascontiguousarray(z["table"])
            accept = np.ascontiguousarray(z["accept"])
            start = int(z["start"])
        return table, accept, start
    except (OSError, KeyError, ValueError, TypeError):
        return None


def cache_store(path: Path, patterns: tuple[str, ...], table: Table, accept: Accept, start: int) -> None:
    """Write the tables atomically to ``path``; a failure to write is ignored (the cache is optional)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(
                    f,
                    table=table,
                    accept=accept,
                    start=np.int64(start),
                    patterns=np.array(patterns, dtype=np.str_),
                )
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError:
        pass  # a read-only or full cache directory only costs a rebuild next time
