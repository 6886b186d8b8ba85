"""Point numba's on-disk cache at a directory keyed by a digest of micronf's own sources.

Why: numba keys a cached function on *its own* file only. A compiled kernel inlines the ring,
pool and header functions it calls from other modules, so after editing (or upgrading) one of
those, kernels elsewhere would silently load stale machine code. Keying the whole cache on a
digest of every source file of the package makes any change start from a clean cache.

Honours an explicit ``NUMBA_CACHE_DIR``; otherwise uses
``$MICRONF_CACHE_DIR`` or ``$XDG_CACHE_HOME/micronf`` (default ``~/.cache/micronf``).
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path


def source_digest(package_dir: Path) -> str:
    """A short digest of the ``.py`` files under ``package_dir`` that hold compiled code (mention numba).

    Only those can end up inside a kernel (a constant a kernel uses must live in such a module
    too), so editing the CLI or the orchestrator keeps the compiled kernels.
    """
    h = hashlib.blake2b(digest_size=8)
    for path in sorted(package_dir.rglob("*.py")):
        data = path.read_bytes()
        if b"numba" in data:
            h.update(str(path.relative_to(package_dir)).encode())
            h.update(data)
    return h.hexdigest()


def configure() -> Path | None:
    """Set the cache directory before any kernel is compiled; returns it (None if the user chose)."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return None
    base = os.environ.get("MICRONF_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "micronf"
    )
    cache_dir = Path(base) / f"numba-{source_digest(Path(__file__).parent)}"
    os.environ["NUMBA_CACHE_DIR"] = str(cache_dir)
    config = sys.modules.get("numba.core.config")
    if config is not None:  # numba was imported first: it read the environment already
        config.CACHE_DIR = str(cache_dir)  # type: ignore[attr-defined]
    return cache_dir
