"""The orchestrator's state: every SFC deployment, in one SQLite file, so a restart loses none.

Why SQLite (stdlib ``sqlite3``): one file, no server, transactions, and WAL journaling so a reader
(``GET /v1/sfcs``) never waits for a writer and a crash mid-write leaves the previous state. One
connection is shared by every thread behind a lock: the orchestrator writes a few rows per
deployment, so contention is not a concern and one connection keeps the ordering of writes simple.

Tables (``schema_version`` says which layout the file has; a file from a newer micronf is refused
rather than misread):

- ``deployments``: one row per SFC deployment: its name, the source it was created from (the SFC
  text, imported files and traffic options, as JSON), the composition (before/after graphs and
  rewrites, JSON), its state, timestamps and the last error;
- ``parts``: the deploy request sent to each agent (one row per agent the deployment runs on),
  which is what a redeploy after an agent restart sends again, unchanged.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

SCHEMA_VERSION = 1

State = Literal["deploying", "running", "failed", "unreachable", "retrying", "deleting"]
STATES: tuple[str, ...] = get_args(State)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS deployments (
    name        TEXT PRIMARY KEY,
    source      TEXT NOT NULL,
    composition TEXT NOT NULL,
    state       TEXT NOT NULL,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    error       TEXT
);
CREATE TABLE IF NOT EXISTS parts (
    name      TEXT NOT NULL REFERENCES deployments(name) ON DELETE CASCADE,
    agent_url TEXT NOT NULL,
    request   TEXT NOT NULL,
    PRIMARY KEY (name, agent_url)
);
"""


class StoreError(RuntimeError):
    """The state file cannot be used (unreadable, or written by a newer micronf)."""


class RecordExistsError(KeyError):
    """A deployment with this name is already stored."""


@dataclass(frozen=True)
class Record:
    """One stored deployment; ``parts`` maps agent URL -> the DeployRequest JSON sent to it."""

    name: str
    source: str
    composition: str
    state: State
    parts: dict[str, str] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0
    error: str | None = None


class Store:
    """Deployments in the SQLite file ``path`` (created with its directory if missing; ``:memory:`` works)."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            self.path = str(Path(self.path).expanduser())
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=5000")
            with self._tx() as db:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                row = db.execute("SELECT version FROM schema_version").fetchone()
                if row is None:
                    db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
                elif row[0] > SCHEMA_VERSION:
                    raise StoreError(f"{self.path}: state written by a newer micronf (schema {row[0]}, this one "
                                     f"reads {SCHEMA_VERSION}); upgrade micronf or use another --db")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot use the state file: {exc}") from exc

    def _tx(self) -> _Transaction:
        return _Transaction(self._db, self._lock)

    # -- writes ---------------------------------------------------------------------------------
    def create(self, rec: Record) -> Record:
        """Insert a new deployment with its parts (RecordExistsError if the name is taken)."""
        now = time.time()
        rec = Record(rec.name, rec.source, rec.composition, rec.state, dict(rec.parts), now, now, rec.error)
        with self._tx() as db:
            try:
                db.execute("INSERT INTO deployments VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (rec.name, rec.source, rec.composition, rec.state, now, now, rec.error))
            except sqlite3.IntegrityError:
                raise RecordExistsError(rec.name) from None
            db.executemany("INSERT INTO parts VALUES (?, ?, ?)",
                           [(rec.name, url, req) for url, req in rec.parts.items()])
        return rec

    def set_state(self, name: str, state: State, error: str | None = None) -> None:
        """Change a deployment's state (and its last error: None clears it)."""
        with self._tx() as db:
            cur = db.execute("UPDATE deployments SET state = ?, error = ?, updated_at = ? WHERE name = ?",
                             (state, error, time.time(), name))
            if cur.rowcount == 0:
                raise KeyError(name)

    def delete(self, name: str) -> None:
        """Forget a deployment and its parts (no error if it is not stored)."""
        with self._tx() as db:
            db.execute("DELETE FROM deployments WHERE name = ?", (name,))

    # -- reads ----------------------------------------------------------------------------------
    def get(self, name: str) -> Record | None:
        """One deployment, or None."""
        found = self._select("WHERE name = ?", (name,))
        return found[0] if found else None

    def records(self) -> list[Record]:
        """Every deployment, oldest first."""
        return self._select("", ())

    def _select(self, where: str, args: tuple[str, ...]) -> list[Record]:
        with self._tx() as db:
            rows = db.execute("SELECT name, source, composition, state, created_at, updated_at, error "
                              f"FROM deployments {where} ORDER BY created_at, name", args).fetchall()
            parts: dict[str, dict[str, str]] = {}
            for name, url, req in db.execute("SELECT name, agent_url, request FROM parts ORDER BY rowid"):
                parts.setdefault(name, {})[url] = req
        return [Record(name=r[0], source=r[1], composition=r[2], state=r[3], parts=parts.get(r[0], {}),
                       created_at=r[4], updated_at=r[5], error=r[6]) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class _Transaction:
    """``with``: hold the store's lock and run one transaction (committed, or rolled back on error)."""

    def __init__(self, db: sqlite3.Connection, lock: threading.Lock) -> None:
        self._db = db
        self._lock = lock

    def __enter__(self) -> sqlite3.Connection:
        self._lock.acquire()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise
        return self._db

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        try:
            self._db.execute("ROLLBACK" if exc_type is not None else "COMMIT")
        finally:
            self._lock.release()
