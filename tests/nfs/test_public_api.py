"""The µNF author surface: ``micronf.nf`` keeps its names, µNFs import only it, and a µNF class
is checked when it is defined (labels, drop reasons and counters declared once, the kernel's
signature), so mistakes fail at import with the class named, not at deploy."""

from __future__ import annotations

import ast
from enum import auto
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numba import njit

import micronf.nf as nf
from micronf.nf import Counters, Descriptor, DropReasons, Labels, MicroNF, Verdict

PUBLIC = [
    "M_HASH", "PLUGINS_ENV", "Access", "CounterArray", "Counters", "Descriptor", "DropReasons", "Handles",
    "KernelRun", "KernelState", "Labels", "MicroNF", "NFConfig", "NFConfigError", "NoState", "Out",
    "PoolArrays", "Verdict", "VerdictArray", "borrowed", "borrowed_pool", "cycles", "pkt_frame", "pkt_set_len",
    "run_kernel", "usleep",
]
NFS = Path(nf.__file__).parent / "nfs"
# besides micronf.nf, a µNF may import the packet helpers and the other µNF modules
ALLOWED = ("micronf.nf", "micronf.nfs.", "micronf.packet")


@pytest.fixture(autouse=True)
def _forget_test_nfs() -> Any:
    """The µNF classes defined here stay out of the registry the catalog tests read."""
    before = dict(MicroNF.registry)
    yield
    MicroNF.registry.clear()
    MicroNF.registry.update(before)


def test_public_names_are_pinned() -> None:
    assert sorted(nf.__all__) == sorted(PUBLIC)
    assert all(hasattr(nf, name) for name in PUBLIC)


@pytest.mark.parametrize("path", sorted(NFS.glob("[!_]*.py")), ids=lambda p: p.stem)
def test_library_nfs_import_only_the_author_surface(path: Path) -> None:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("micronf"):
            assert node.module.startswith(ALLOWED), f"{path.name} imports {node.module}"


class Two(Labels):
    first = auto()
    second = auto()


class Why(DropReasons):
    bad = auto()
    worse = auto()


class Count(Counters):
    seen = auto()


@njit(cache=True, nogil=True)
def _kernel(p: Any, handles: Any, n: int, verdicts: Any, state: Any, counters: Any) -> None:
    for i in range(n):
        verdicts[i] = Two.second if i % 2 else Two.first
    counters[Count.seen] += n


@njit(cache=True, nogil=True)
def _dropper(p: Any, handles: Any, n: int, verdicts: Any, state: Any, counters: Any) -> None:
    for i in range(n):
        if i % 2:
            verdicts[i] = Why.worse
        else:
            verdicts[i] = Two.first


@njit(cache=True)
def _swapped(p: Any, handles: Any, n: int, state: Any, verdicts: Any, counters: Any) -> None:
    pass


def test_enums_number_verdicts_and_counters_by_declaration_order() -> None:
    assert [int(m) for m in Two] == [0, 1] and [int(m) for m in Why] == [-1, -2] and int(Count.seen) == 0

    class ApiTwoWay(MicroNF):
        descriptor = Descriptor()
        Label = Two
        Counter = Count
        kernel = _kernel

    assert ApiTwoWay.labels == ("first", "second") and ApiTwoWay.drop_reasons == ()
    assert ApiTwoWay().counter_names() == ("seen",)
    run = nf.run_kernel(ApiTwoWay(), [bytes(60)] * 5)
    assert run.verdicts == ["first", "second", "first", "second", "first"] and run.counters == {"seen": 5}


def test_harness_decodes_drops_into_verdicts() -> None:
    class ApiDropper(MicroNF):
        descriptor = Descriptor(may_drop=True)
        Label = Two
        Drop = Why
        kernel = _dropper

    frames = [bytes([k]) * 60 for k in range(4)]
    run = nf.run_kernel(ApiDropper(), frames)
    assert [v.is_drop for v in run.verdicts] == [False, True, False, True]
    assert run.drops == {"bad": [], "worse": [frames[1], frames[3]]} and run.outputs["first"] == frames[0::2]
    assert ApiDropper.verdict_names() == ("first", "second", "drop:bad", "drop:worse")


def test_verdict_names() -> None:
    drop, label = Verdict.drop("sqli"), Verdict("out")
    assert drop == "drop:sqli" and drop.is_drop and drop.reason == "sqli"
    assert not label.is_drop and label.label == "out"
    with pytest.raises(ValueError, match="is a label"):
        _ = label.reason
    with pytest.raises(ValueError, match="is a drop"):
        _ = drop.label
    assert Verdict.decode(1, ("a", "b"), ("x",)) == "b" and Verdict.decode(-1, ("a",), ("x",)) == "drop:x"
    assert Verdict.decode(2, ("a", "b"), ("x",)) is None and Verdict.decode(-2, ("a",), ("x",)) is None


def test_a_kernel_with_the_wrong_signature_fails_at_class_definition() -> None:
    with pytest.raises(TypeError, match=r"µNF ApiSwapped: kernel _swapped\(p, handles, n, state, verdicts, counters\)"):
        class ApiSwapped(MicroNF):
            descriptor = Descriptor()
            kernel = _swapped


def test_a_python_kernel_fails_at_class_definition() -> None:
    def plain(p: Any, handles: Any, n: int, verdicts: Any, state: Any, counters: Any) -> None:
        pass

    with pytest.raises(TypeError, match=r"µNF ApiPlain: kernel .* must be a numba function"):
        class ApiPlain(MicroNF):
            descriptor = Descriptor()
            kernel = plain


def test_hand_kept_labels_are_refused() -> None:
    with pytest.raises(TypeError, match="µNF ApiOld: labels are derived; declare them as an enum Label"):
        class ApiOld(MicroNF):
            descriptor = Descriptor()
            labels = ("out", "other")
            kernel = _kernel


def test_enums_must_be_numbered_by_auto() -> None:
    class Gap(Labels):
        a = 0
        b = 2

    with pytest.raises(TypeError, match=r"µNF ApiGap: Label Gap must number its members \[0, 1\]"):
        class ApiGap(MicroNF):
            descriptor = Descriptor()
            Label = Gap
            kernel = _kernel

    with pytest.raises(TypeError, match="µNF ApiMixed: Drop must be a subclass of DropReasons"):
        class ApiMixed(MicroNF):
            descriptor = Descriptor(may_drop=True)
            Drop = Two  # type: ignore[assignment]
            kernel = _kernel


def test_state_must_be_a_named_tuple_of_arrays() -> None:
    class ApiTupleState(MicroNF):
        descriptor = Descriptor()
        Label = Two
        kernel = _kernel

        def state(self) -> nf.KernelState:
            return (np.zeros(1),)

    with pytest.raises(TypeError, match=r"ApiTupleState.state\(\) must return a NamedTuple"):
        nf.run_kernel(ApiTupleState(), [bytes(60)])
