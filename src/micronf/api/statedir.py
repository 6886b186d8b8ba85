"""Where micronf's servers keep their state, and their API tokens (light: the client commands use it).

- **State directory** (:func:`state_dir`): ``$MICRONF_STATE_DIR``, else
  ``$XDG_STATE_HOME/micronf``, else ``~/.local/state/micronf``. The agent keeps its token and its
  data directory under ``agent/``, the orchestrator its token next to its database. The defaults
  are such that the local demo (an agent and an orchestrator on this machine, the CLI talking to
  the orchestrator) needs no setup by hand.
- **Tokens** (:func:`load_token`): a bearer token per server, generated at first start into a
  file of mode 0600 (``secrets.token_urlsafe(32)``, 256 bits), read back by the servers, the
  orchestrator (its agents' tokens) and the client commands.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

log = logging.getLogger("micronf.api.statedir")


def state_dir() -> Path:
    """The directory servers keep their tokens (and the agent its data) in, by default."""
    explicit = os.environ.get("MICRONF_STATE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "state") / "micronf"


def agent_token_file() -> Path:
    """The local agent's default token file (the orchestrator sends it to agents by default)."""
    return state_dir() / "agent" / "token"


def agent_data_dir() -> Path:
    """The local agent's default data directory (the only place its capture files may be)."""
    return state_dir() / "agent" / "data"


def orchestrator_token_file() -> Path:
    """The orchestrator's default token file (the CLI reads it when given no other token)."""
    return state_dir() / "orchestrator.token"


class TokenError(Exception):
    """A token file that cannot be used (unreadable, empty, not a regular file)."""


def read_token(path: Path) -> str:
    """The token in ``path`` (first line, stripped); warns when others may read the file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise TokenError(f"cannot read the token file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise TokenError(f"the token file {path} is not a regular file")
        if st.st_mode & 0o077:
            log.warning("the token file %s is readable by others (mode %o): chmod 600 it", path, st.st_mode & 0o777)
        data: bytes = f.read(4096)
    lines = data.decode("utf-8", "replace").strip().splitlines()
    if not lines or not lines[0].strip():
        raise TokenError(f"the token file {path} is empty")
    return lines[0].strip()


def load_token(path: Path) -> str:
    """The token in ``path``, creating the file (mode 0600, its directory 0700) with a new random
    token when it does not exist."""
    path = path.expanduser()
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except FileExistsError:  # created meanwhile by another process: use that one
            return read_token(path)
        except OSError as exc:
            raise TokenError(f"cannot create the token file {path}: {exc.strerror}") from None
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
        log.info("generated a new API token in %s", path)
    return read_token(path)


def read_token_if_any(path: Path) -> str | None:
    """The token in ``path``, or ``None`` when there is no usable one (the request then goes
    without, and the server's 401 says so): a client side that must not fail before asking."""
    try:
        return read_token(path)
    except TokenError as exc:
        log.debug("%s", exc)
        return None


def bearer(token: str | None) -> dict[str, str]:
    """The ``Authorization`` header for ``token`` (none for ``None``)."""
    return {} if token is None else {"Authorization": f"Bearer {token}"}
