"""Test-session guards shared by every test: no shared-memory segment may outlive the session."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from micronf.dataplane.segment import list_segments

TEST_PREFIX = f"test-{os.getpid()}-"


@pytest.fixture(scope="session", autouse=True)
def _no_leftover_segments() -> Iterator[None]:
    """Fail the session if any segment created by these tests is still present at the end."""
    yield
    leftovers = [str(i.path) for i in list_segments() if i.name.startswith(TEST_PREFIX)]
    assert not leftovers, f"shared-memory segments leaked by the tests: {leftovers}"


@pytest.fixture
def seg_name(request: pytest.FixtureRequest) -> str:
    """A segment name unique to this test and this test session."""
    safe = "".join(c if c.isalnum() else "-" for c in request.node.name)[:60]
    return f"{TEST_PREFIX}{safe}"


def shm_files() -> set[str]:
    return {p.name for p in Path("/dev/shm").glob("micronf-*")}


@pytest.fixture
def shm_dir() -> Iterator[Path]:
    """A private segment directory (set it as MICRONF_SHM_DIR), emptied and removed afterwards."""
    path = Path("/dev/shm") / f"mnftest-{uuid.uuid4().hex[:8]}"  # not micronf-*: no segment
    path.mkdir()
    yield path
    for p in path.iterdir():
        p.unlink()
    path.rmdir()
