"""Two lanes side by side (rlreason/lanes.py): both run, each with its share of the threads; the
spawned lane's output goes to its log; a failure in either lane is raised and stops the other."""

import time
from functools import partial

import pytest
import torch

from rlreason.lanes import run_side_by_side, threads_per_lane


@pytest.fixture
def two_threads():
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(saved)


def test_both_lanes_run_with_one_thread_each(tmp_path, two_threads):
    log = tmp_path / "lane.log"
    mine, other = run_side_by_side(torch.get_num_threads, partial(threads_per_lane, 1), log)
    assert (mine, other) == (1, 1)  # the spawned lane's torch sees one thread too
    assert torch.get_num_threads() == 2  # restored afterwards
    text = log.read_text()
    assert "lane started" in text and "lane done" in text


def test_a_failing_spawned_lane_is_raised_with_its_log(tmp_path, two_threads):
    log = tmp_path / "lane.log"
    with pytest.raises(RuntimeError, match="other lane failed .*lane.log"):
        run_side_by_side(lambda: {"ok": True}, partial(int, "not a number"), log)
    assert "ValueError" in log.read_text()


def test_a_failing_lane_here_stops_the_spawned_one(tmp_path, two_threads):
    def fail():
        time.sleep(1)
        raise KeyError("here")

    started = time.time()
    with pytest.raises(KeyError, match="here"):
        run_side_by_side(fail, partial(time.sleep, 300), tmp_path / "lane.log")
    assert time.time() - started < 120  # the sleeping lane was terminated, not waited for
