"""The suite's schedule: per-file seconds parsed from pytest's --durations lines, files run longest first."""

from __future__ import annotations

import sys

import pytest

from scheduling import longest_first
from workflow_utils import ROOT

sys.path.insert(0, str(ROOT / "tools"))
from suite_durations import file_seconds  # noqa: E402

LOG = """\
============================= slowest durations ==============================
89.10s setup    tests/workflow/test_workflow.py::test_outputs
12.50s call     tests/workflow/test_workflow.py::test_outputs
0.40s teardown  tests/workflow/test_workflow.py::test_outputs
3.00s call     tests/unit/score/test_scoring.py::test_lape[a-1]
2.00s call     tests/unit/score/test_scoring.py::test_lape[b-2]
(12 durations < 0.005s hidden.  Use -vv to show these durations.)
700 passed in 800.00s
"""


def test_seconds_are_summed_per_file_over_setup_call_and_teardown():
    assert file_seconds(LOG.splitlines()) == {"tests/workflow/test_workflow.py": 102.0,
                                              "tests/unit/score/test_scoring.py": 5.0}


class Item:
    def __init__(self, nodeid, group=None):
        self.nodeid, self.group = nodeid, group or nodeid.split("::")[0]

    def get_closest_marker(self, name):
        assert name == "xdist_group"
        if self.group == "slurm":  # the keyword form, as xdist also accepts
            return pytest.mark.xdist_group(name=self.group).mark
        return pytest.mark.xdist_group(self.group).mark

    def __repr__(self):
        return self.nodeid


def test_groups_run_longest_first_each_together_in_its_own_order():
    items = [Item("a.py::t1"), Item("a.py::t2"), Item("b.py::t1"), Item("s1.py::t1", "slurm"),
             Item("c.py::t1"), Item("s2.py::t1", "slurm"), Item("b.py::t2")]
    seconds = {"a.py": 5.0, "b.py": 30.0, "s1.py": 20.0, "s2.py": 15.0}  # c.py unmeasured: 0, last
    order = [i.nodeid for i in longest_first(items, seconds)]
    # slurm = s1 + s2 = 35 > b 30 > a 5 > c 0; b's two tests together, in their order
    assert order == ["s1.py::t1", "s2.py::t1", "b.py::t1", "b.py::t2", "a.py::t1", "a.py::t2", "c.py::t1"]
    # nothing measured: the collection order
    assert [i.nodeid for i in longest_first(items[:3], {})] == ["a.py::t1", "a.py::t2", "b.py::t1"]
