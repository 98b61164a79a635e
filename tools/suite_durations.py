"""Per test file seconds, for the suite's scheduling (tests/conftest.py orders the files longest first).

    python -m pytest -q tests -n 0 --durations=0 > durations.log
    python tools/suite_durations.py durations.log > tests/durations.json

Reads pytest's ``--durations=0`` lines (``12.34s call     tests/x/test_y.py::test_z``), sums setup, call
and teardown per file, and prints {file: seconds} as JSON, largest first.  Run it again when files are
added or get much slower: a file missing from the JSON runs after the known ones (weight 0).
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict

LINE = re.compile(r"^\s*([0-9.]+)s\s+(setup|call|teardown)\s+(\S+?\.py)(?:::|\s|$)")


def file_seconds(lines) -> dict[str, float]:
    """{test file: summed seconds of its setup, call and teardown phases}, largest first."""
    total: dict[str, float] = defaultdict(float)
    for line in lines:
        m = LINE.match(line)
        if m:
            total[m.group(3)] += float(m.group(1))
    return {f: round(s, 1) for f, s in sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as fh:
        seconds = file_seconds(fh)
    if not seconds:
        print(f"{argv[0]}: no --durations lines (run pytest with --durations=0)", file=sys.stderr)
        return 1
    json.dump(seconds, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
