"""Who an agent is: the short id in the name of every segment it creates (``mnf-<id>-<name>``).

Two agents on one machine share ``/dev/shm``: without an id in the names, the second one to
deploy a name another agent uses fails. ``micronf agent`` derives its id from the address it
listens on (:func:`agent_identity`), so an agent restarted on the same address has the same id
and can find its own segments again; an in-process agent (``micronf run``, tests) takes a random
one (:func:`random_identity`).
"""

from __future__ import annotations

import hashlib
import re
import secrets

_ID_RE = re.compile(r"^[a-z0-9]{1,16}$")
_SHARED_HOSTS = ("127.0.0.1", "localhost", "0.0.0.0", "::", "::1", "")


def agent_identity(host: str, port: int) -> str:
    """The id of the agent serving ``host:port``: the port, plus a short hash of the address
    unless it is loopback or every interface (those cannot be bound twice on one port, other
    addresses can: 127.0.0.2:8771 next to 127.0.0.1:8771)."""
    if host in _SHARED_HOSTS:
        return str(port)
    return f"{port}h{hashlib.sha256(host.encode()).hexdigest()[:6]}"


def random_identity() -> str:
    """A fresh id for an agent without an address of its own."""
    return secrets.token_hex(4)


def check_identity(agent_id: str) -> str:
    """``agent_id`` if it is 1-16 of [a-z0-9], else ``ValueError``."""
    if not _ID_RE.match(agent_id):
        raise ValueError(f"agent id {agent_id!r} must be 1-16 of [a-z0-9]")
    return agent_id
