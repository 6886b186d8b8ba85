"""The control region's typed views: each line's words are its own, requests and exits read back."""

from __future__ import annotations

import numpy as np
import pytest

from micronf.dataplane.control import LINE_WORDS, PAUSE, RUN, STOP, ControlBlock


def block(lines: int) -> ControlBlock:
    return ControlBlock(np.zeros(ControlBlock.nbytes(lines) // 8, dtype=np.int64))


def test_each_line_writes_only_its_own_words() -> None:
    ctl = block(3)
    assert ctl.lines == 3 and ctl.words.shape[0] == 4 * LINE_WORDS  # the graph line, then 3 process lines
    line = ctl.line(1)
    line.pid = 4242
    line.ready = True
    line.count_call()
    line.count_start()
    line.paused = True
    line.settle(7)
    line.request_pause()
    touched = np.flatnonzero(ctl.words)
    assert touched.min() >= 2 * LINE_WORDS and touched.max() < 3 * LINE_WORDS  # line 1 is words 32..47
    assert ctl.words[line.stop_word] == PAUSE  # what compiled code polls is the request word
    assert (line.pid, line.ready, line.calls, line.starts, line.paused, line.settled) == (4242, True, 1, 1, True, 7)
    assert not ctl.line(0).ready and ctl.line(2).pid == 0
    with pytest.raises(IndexError):
        ctl.line(3)


def test_requests_resume_and_graph_stop() -> None:
    ctl = block(2)
    line = ctl.line(0)
    assert line.request == RUN and not line.should_stop()
    line.request_pause()
    assert line.pause_requested() and not line.should_stop()
    line.resume()
    assert line.request == RUN
    line.request_stop()
    line.resume()  # a stop is not undone by a resume
    assert line.request == STOP and line.should_stop()
    line.prepare_start()
    assert line.request == RUN and not line.ready
    ctl.words[0] = 1  # the graph-wide stop word
    assert ctl.line(1).should_stop()


def test_exit_status_and_layout_generation() -> None:
    ctl = block(1)
    line = ctl.line(0)
    assert line.status is None and not line.exited
    line.record_exit(-9)
    assert line.exited and line.status == -9
    line.clear_exit()
    assert line.status is None
    assert ctl.layout_generation == 0
    ctl.bump_layout_generation()
    ctl.bump_layout_generation()
    assert ctl.layout_generation == 2 and ctl.words[1] == 2 and line.request == RUN
