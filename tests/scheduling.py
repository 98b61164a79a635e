"""The order the suite's test files run in under pytest-xdist: longest first (tests/conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path


def file_seconds(path: Path) -> dict[str, float]:
    """{test file: seconds} measured by tools/suite_durations.py (empty when the file is absent)."""
    return json.loads(path.read_text()) if path.is_file() else {}


def longest_first(items: list, seconds: dict[str, float]) -> list:
    """The items with their xdist groups in order of measured time, longest first (a group's time: its
    files' sum; an unmeasured file 0), each group's items together and in their own order.  pytest-xdist
    hands a worker the next group in this order when it is free (`--no-loadscope-reorder` in addopts: by
    default it orders groups by their number of tests, which put the few-test, minutes-long workflow files
    last, one worker finishing them while the other idled): longest first keeps the two workers' ends close."""
    def group(item) -> str:
        mark = item.get_closest_marker("xdist_group")  # xdist_group("name") or xdist_group(name="name")
        return mark.kwargs.get("name") or mark.args[0]

    weight: dict[str, float] = {}
    first: dict[str, int] = {}
    files: set[str] = set()
    for i, item in enumerate(items):
        name, path = group(item), item.nodeid.split("::")[0]
        first.setdefault(name, i)
        weight.setdefault(name, 0.0)
        if path not in files:
            files.add(path)
            weight[name] += seconds.get(path, 0.0)
    return sorted(items, key=lambda item: (-weight[group(item)], first[group(item)]))
