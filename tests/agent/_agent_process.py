"""A real ``micronf agent`` process on a free loopback port, for the tests that talk HTTP to it."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def agent_process(*args: str) -> Iterator[tuple[str, int]]:
    """``micronf agent --port P ARGS...`` until it serves ``/health``; its URL and port. Stopped with
    SIGTERM afterwards, which must end it cleanly (exit 0)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", "from micronf.app.cli import main; main()", "agent", "--port",
                             str(port), *args])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/health", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                assert proc.poll() is None and time.monotonic() < deadline, "agent did not come up"
                time.sleep(0.1)
        yield url, port
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
