"""The SQLite store: rows survive a restart, names are unique, a newer schema is refused."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from micronf.orchestrator.store import SCHEMA_VERSION, Record, RecordExistsError, Store, StoreError


def _rec(name: str) -> Record:
    return Record(name=name, source='{"sfc": "x"}', composition='{"c": 1}', state="deploying",
                  parts={"http://a:1": f'{{"name": "{name}"}}', "http://b:2": "{}"})


def test_rows_survive_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "orch.db"
    s = Store(db)
    s.create(_rec("one"))
    s.create(_rec("two"))
    s.set_state("one", "failed", "agent said no")
    s.set_state("two", "running")
    s.close()
    s = Store(db)  # a new process would see the same
    got = {r.name: r for r in s.records()}
    assert list(got) == ["one", "two"]
    assert got["one"].state == "failed" and got["one"].error == "agent said no"
    assert got["two"].state == "running" and got["two"].error is None
    assert got["two"].parts == {"http://a:1": '{"name": "two"}', "http://b:2": "{}"}
    assert got["two"].updated_at >= got["two"].created_at > 0
    s.delete("one")
    assert s.get("one") is None and [r.name for r in s.records()] == ["two"]
    s.close()
    with sqlite3.connect(db) as raw:  # parts go with their deployment
        assert raw.execute("SELECT COUNT(*) FROM parts WHERE name = 'one'").fetchone() == (0,)
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_names_are_unique_and_unknown_names_fail(tmp_path: Path) -> None:
    s = Store(tmp_path / "o.db")
    s.create(_rec("one"))
    with pytest.raises(RecordExistsError):
        s.create(_rec("one"))
    assert len(s.get("one").parts) == 2  # type: ignore[union-attr]  # the failed insert left nothing behind
    with pytest.raises(KeyError):
        s.set_state("nope", "running")
    s.delete("nope")  # forgetting what is not there is fine


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    Store(db).close()
    with sqlite3.connect(db) as raw:
        raw.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="newer micronf"):
        Store(db)


def test_threads_share_one_store(tmp_path: Path) -> None:
    s = Store(tmp_path / "o.db")
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for i in range(20):
                s.create(_rec(f"t{k}-{i}"))
                s.set_state(f"t{k}-{i}", "running")
                s.records()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert len(s.records()) == 80 and {r.state for r in s.records()} == {"running"}
