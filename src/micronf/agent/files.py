"""The agent's data directory: the only place a deploy request may name files in.

Why: the agent usually runs as root and takes requests from the network, so a capture path in a
request is a path an untrusted caller chooses. A pcap Rx input or a pcap (or seqcheck) Tx output is therefore a
*name inside the agent's data directory* (``micronf agent --data-dir D``), checked here before a
single process starts:

- the name is relative, not empty, has no ``..`` component and no NUL byte;
- the file it resolves to (symlinks followed by :meth:`Path.resolve`) is inside the data
  directory: a symlink leading out is refused, one staying inside is fine;
- an input must be a regular file that starts like a capture (pcap/pcapng magic); it is opened
  with ``O_NOFOLLOW`` on the resolved path, and the error never quotes its bytes;
- an output is created here, by the agent, with ``O_CREAT | O_EXCL | O_NOFOLLOW`` (mode 0600),
  so an existing file is never replaced unless the output says ``overwrite: true`` (then it is
  truncated, still with ``O_NOFOLLOW``, and must be a regular file); missing directories are
  created only inside the data directory; two outputs cannot name the same file.

:func:`confine` returns the request with every file path replaced by its absolute resolved path
(what the Rx/Tx services open) and the outputs it created (removed again if the deployment fails).
A replicated deployment (mode ``replicas``) writes one file per replica, ``<stem>.r<i><suffix>``
(:func:`replica_file`): each is created under the same rules, must be a plain file of that name (a
symlink is refused: the replicas open the name derived from the output's path), and the output's
path in the returned request is the common one, resolved up to its directory, never created.
Every refusal is an :class:`~micronf.api.errors.InvalidDeploymentError` (HTTP 400) naming the
field.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

from micronf.api.errors import InvalidDeploymentError
from micronf.api.models import DeployRequest

# pcap (µs, ns, Kuznetzov) in either byte order, and the pcapng Section Header Block type
_CAPTURE_MAGICS = frozenset(
    m.to_bytes(4, order) for m in (0xA1B2C3D4, 0xA1B23C4D, 0xA1B2CD34) for order in ("little", "big")
) | {b"\x0a\x0d\x0d\x0a"}


FILE_OUTPUTS = ("pcap", "seqcheck")  # Tx backends that write a file: a pcap, a seqcheck state file


def prepare_data_dir(path: Path) -> Path:
    """Create the data directory (mode 0700) if missing; returns it resolved."""
    path = path.expanduser()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path.resolve()


def _name(where: str, value: object) -> PurePosixPath:
    """The name as a relative path, or a 400 that says what a name may be."""
    rule = "a file name relative to the agent's data directory (no absolute path, no '..')"
    if not isinstance(value, str) or not value or "\0" in value:
        raise InvalidDeploymentError(f"{where}: must be {rule}")
    p = PurePosixPath(value)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise InvalidDeploymentError(f"{where}: {_short(value)} is not {rule}")
    return p


def _short(value: str, limit: int = 120) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")


def _inside(where: str, data_dir: Path, name: PurePosixPath) -> Path:
    """The resolved path of ``name``, refused when it (or a symlink on the way) leads out."""
    resolved = (data_dir / name).resolve()
    if not resolved.is_relative_to(data_dir):
        raise InvalidDeploymentError(f"{where}: {_short(str(name))} leads out of the agent's data directory "
                                     "(a symlink to elsewhere); captures must be inside it")
    return resolved


def check_input(where: str, data_dir: Path, value: object) -> Path:
    """The resolved path of a pcap input (a regular file that looks like a capture)."""
    name = _name(where, value)
    path = _inside(where, data_dir, name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InvalidDeploymentError(f"{where}: no file {_short(str(name))} in the agent's data directory") from None
    except OSError as exc:
        raise InvalidDeploymentError(f"{where}: cannot open {_short(str(name))}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InvalidDeploymentError(f"{where}: {_short(str(name))} is not a regular file")
        head = os.read(fd, 4)
    finally:
        os.close(fd)
    if head not in _CAPTURE_MAGICS:  # say what it is not, never what it contains
        raise InvalidDeploymentError(f"{where}: {_short(str(name))} is not a pcap or pcapng capture")
    return path


def create_output(where: str, data_dir: Path, value: object, *, overwrite: bool) -> tuple[Path, bool]:
    """Create (or, with ``overwrite``, truncate) a pcap output; returns its path and whether it is new."""
    name = _name(where, value)
    path = _inside(where, data_dir, name)
    missing = [p for p in (path.parent, *path.parent.parents) if p.is_relative_to(data_dir) and not p.exists()]
    for d in reversed(missing):  # inside the data directory only: path is resolved and contained
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise InvalidDeploymentError(f"{where}: cannot create directory for {_short(str(name))}: "
                                         f"{exc.strerror}") from None
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(path, flags | os.O_EXCL, 0o600)
        new = True
    except FileExistsError:
        if not overwrite:
            raise InvalidDeploymentError(f"{where}: {_short(str(name))} exists in the agent's data directory; "
                                         "set \"overwrite\": true on the output to replace it") from None
        try:
            fd = os.open(path, flags, 0o600)
        except OSError as exc:
            raise InvalidDeploymentError(f"{where}: cannot open {_short(str(name))}: {exc.strerror}") from None
        new = False
    except OSError as exc:
        raise InvalidDeploymentError(f"{where}: cannot create {_short(str(name))}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InvalidDeploymentError(f"{where}: {_short(str(name))} is not a regular file")
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)
    return path, new


def replica_file(path: str, index: int) -> str:
    """The file replica ``index`` of a replicated deployment writes for an output named ``path``:
    ``out.pcap`` → ``out.r0.pcap`` (the suffix kept, so tools still recognise the file)."""
    p = PurePosixPath(path)
    return str(p.with_name(f"{p.stem}.r{index}{p.suffix}"))


def _create_replica_outputs(where: str, data_dir: Path, name: PurePosixPath, replicas: int, *,
                            overwrite: bool) -> tuple[Path, list[Path]]:
    """Create the per-replica files of output ``name`` (see the module docstring); returns the
    output's common path (its directory resolved) and the files that are new."""
    base = _inside(where, data_dir, name.parent) / name.name
    names = [replica_file(str(name), i) for i in range(replicas)]
    for i, n in enumerate(names):
        if _inside(where, data_dir, PurePosixPath(n)) != Path(replica_file(str(base), i)):
            raise InvalidDeploymentError(f"{where}: {_short(n)} is a symlink; a replica's output must be a plain file")
    created = []
    try:
        for n in names:
            path, new = create_output(where, data_dir, n, overwrite=overwrite)
            if new:
                created.append(path)
    except BaseException:
        for p in created:
            p.unlink(missing_ok=True)
        raise
    return base, created


@contextmanager
def confine(req: DeployRequest, data_dir: Path) -> Iterator[DeployRequest]:
    """``req`` with its capture files checked and made absolute (see the module docstring).

    The outputs are created on entry; if the ``with`` body raises, the ones created here are
    removed again (a failed deployment leaves no new files), and the exception propagates.
    """
    created: list[Path] = []
    rx = req.rx
    rx_file = rx is not None and rx.get("kind") == "pcap" and "path" in rx
    files = {x: o for x, o in req.outputs.items() if o.backend.get("kind") in FILE_OUTPUTS and "path" in o.backend}
    if not rx_file and not files:
        yield req
        return
    data_dir = prepare_data_dir(data_dir)
    try:
        update: dict[str, Any] = {}
        if rx is not None and rx_file:
            update["rx"] = {**rx, "path": str(check_input("rx.path", data_dir, rx["path"]))}
        outputs = dict(req.outputs)
        seen: dict[Path, str] = {}
        for exit_name, out in files.items():
            backend = out.backend
            where = f"outputs.{exit_name}.backend.path"
            path = _inside(where, data_dir, _name(where, backend["path"]))
            if path in seen:
                raise InvalidDeploymentError(f"{where}: the same file as {seen[path]}")
            seen[path] = where
            if req.mode == "replicas":
                path, new_files = _create_replica_outputs(where, data_dir, _name(where, backend["path"]), req.replicas,
                                                          overwrite=out.overwrite)
                created += new_files
            else:
                path, new = create_output(where, data_dir, backend["path"], overwrite=out.overwrite)
                if new:
                    created.append(path)
            outputs[exit_name] = out.model_copy(update={"backend": {**backend, "path": str(path)}})
        if files:
            update["outputs"] = outputs
        yield req.model_copy(update=update) if update else req
    except BaseException:
        for p in created:
            p.unlink(missing_ok=True)
        raise
