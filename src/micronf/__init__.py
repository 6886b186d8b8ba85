"""micronf: network functions and service function chains built from µNFs.

A µNF is one OS process doing one packet-processing task; µNFs exchange packet handles through
lock-free rings in shared memory. See ``micronf.dataplane`` for the shared-memory data plane.
"""

from micronf import _numba_cache

_numba_cache.configure()

__version__ = "0.1.0"
