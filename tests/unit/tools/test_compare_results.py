"""tools/compare_results.py: two results folders with planted differences, through its command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.image  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402

TOOL = Path(__file__).resolve().parents[3] / "tools" / "compare_results.py"


def run_tool(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True, timeout=300)


def table(values=None, meta=None, layer_type=pa.int32()) -> pa.Table:
    values = np.array([0.5, np.nan, 1.25, -0.0, 3.0]) if values is None else values
    schema = pa.schema([("group", pa.string()), ("layer", layer_type), ("score", pa.float64())],
                       metadata=meta if meta is not None else {"method": "contrast",
                                                                "params": json.dumps({"fdr": 0.01, "k": 5})})
    return pa.table({"group": ["de", "de", "en", "en", "fr"], "layer": [0, 1, 0, 1, 0], "score": values},
                    schema=schema)


def svg(path: Path, y) -> None:
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1, 2], y)
    ax.set_clip_on(True)
    fig.savefig(path, format="svg")
    plt.close(fig)


def build(root: Path, changed: bool) -> None:
    """Two folders alike in everything but what ``changed`` plants."""
    (root / "scores").mkdir(parents=True)
    (root / "logs").mkdir()
    values = np.array([0.5, np.nan, 1.25, -0.0, 3.0])
    pq.write_table(table(), root / "scores" / "same.parquet")
    if changed:
        values = values.copy()
        values[2] = np.nextafter(1.25, 2.0)  # one unit in the last place, row 2
    pq.write_table(table(values), root / "scores" / "value.parquet")
    meta = {"method": "contrast", "params": json.dumps({"fdr": 0.01, "k": 6 if changed else 5})}
    pq.write_table(table(meta=meta), root / "scores" / "meta.parquet")
    pq.write_table(table(layer_type=pa.int64() if changed else pa.int32()), root / "scores" / "type.parquet")
    (root / "run.json").write_text(json.dumps({"n": 3, "inner": {"seed": 1 if changed else 0}}))
    (root / "same.json").write_text(json.dumps({"n": 3}))
    (root / "table.tsv").write_text("a\tb\n1\t2\n3\t" + ("5" if changed else "4") + "\n")
    (root / "table.csv").write_text("a,b\n1,2\n")
    pixels = np.zeros((6, 8, 3), dtype=np.uint8)
    pixels[2, 3] = 200
    # same pixels, different bytes: the PNG's Software text differs
    matplotlib.image.imsave(root / "same_pixels.png", pixels, metadata={"Software": f"run {int(changed)}"})
    moved = pixels.copy()
    if changed:
        moved[4, 5] = 17
    matplotlib.image.imsave(root / "pixel.png", moved)
    svg(root / "same.svg", [0, 1, 0])  # each save: another date and other random ids
    svg(root / "line.svg", [0, 1, 1] if changed else [0, 1, 0])
    (root / "model.bin").write_bytes(b"\x00\x01\x02" + (b"\x04" if changed else b"\x03"))
    (root / "logs" / "job.log").write_text(f"took {1.5 if changed else 2.5} s\n")
    (root / ("only_second.txt" if changed else "only_first.txt")).write_text("x")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("compare")
    build(base / "before", changed=False)
    build(base / "after", changed=True)
    return base / "before", base / "after"


def test_planted_differences_are_each_named(folders):
    before, after = folders
    proc = run_tool(before, after)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    differs = {line.split(": ", 2)[1]: line.split(": ", 2)[2] for line in lines if line.startswith("differs: ")}
    assert set(differs) == {"scores/value.parquet", "scores/meta.parquet", "scores/type.parquet", "run.json",
                            "table.tsv", "pixel.png", "line.svg", "model.bin", "logs/job.log"}
    assert differs["scores/value.parquet"].startswith("column 'score' row 2: 1.25 != 1.2500000000000002")
    assert "1 of 5 rows differ" in differs["scores/value.parquet"]
    assert differs["scores/meta.parquet"] == "schema metadata 'params' differs at k: 5 != 6"
    assert differs["scores/type.parquet"] == "column 'layer': type int32 against int64"
    assert differs["run.json"] == "JSON differs at inner.seed: 0 != 1"
    assert differs["table.tsv"] == "line 3 field 2: '4' != '5'"
    assert differs["pixel.png"] == "pixels differ: 1 of 48, first at x=5, y=4"
    assert differs["model.bin"].startswith("bytes differ from offset 3")
    assert f"only in {before}: only_first.txt" in lines
    assert f"only in {after}: only_second.txt" in lines
    # equal despite different bytes: NaN and -0.0 in the same places, pixels with other PNG metadata, an
    # SVG saved again (other date, other random ids)
    for name in ("scores/same.parquet", "same.json", "table.csv", "same_pixels.png", "same.svg"):
        assert name not in differs and name not in proc.stdout
    assert (before / "same_pixels.png").read_bytes() != (after / "same_pixels.png").read_bytes()
    assert (before / "same.svg").read_bytes() != (after / "same.svg").read_bytes()
    assert lines[-1] == "DIFFERENT: 14 files in both: 5 equal, 9 differ; 1 only in the first, 1 only in the second"


def test_equal_folders_and_excludes(folders, tmp_path):
    before, _ = folders
    proc = run_tool(before, before)
    assert proc.returncode == 0 and proc.stdout.splitlines() == [
        "EQUAL: 15 files in both: 15 equal, 0 differ; 0 only in the first, 0 only in the second"]
    # only the log differs: excluded, the folders are equal
    other = tmp_path / "other"
    build(other, changed=False)
    (other / "logs" / "job.log").write_text("took 9 s\n")
    assert run_tool(before, other).returncode == 1
    proc = run_tool(before, other, "--exclude", "logs/*")
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.startswith("EQUAL: 14 files in both")


def test_values_that_look_equal_are_not():
    """-0.0 against 0.0 and a NaN against a number differ; a missing folder is one line and exit 2."""
    sys.path.insert(0, str(TOOL.parent))
    try:
        import compare_results as tool
    finally:
        sys.path.remove(str(TOOL.parent))
    a = table(np.array([0.0, 1.0, 2.0, 3.0, 4.0]))
    b = table(np.array([-0.0, 1.0, 2.0, 3.0, 4.0]))
    c = table(np.array([0.0, 1.0, 2.0, 3.0, np.nan]))
    assert tool._column_difference("score", a.column("score"), b.column("score")).startswith(
        "column 'score' row 0: 0.0 != -0.0")
    assert tool._column_difference("score", a.column("score"), c.column("score")).startswith(
        "column 'score' row 4: 4.0 != nan")
    assert tool._column_difference("score", c.column("score"), c.column("score")) is None
    proc = run_tool("/nonexistent/first", "/nonexistent/second")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "compare_results: error: /nonexistent/first is not a folder"


def test_metadata_differences_hide_no_data_difference(tmp_path):
    """A timing in the metadata and a value in the data differ: both are reported; --ignore-key drops
    the timing (also inside a JSON value, and in .json files), never the data."""
    first, second = tmp_path / "first", tmp_path / "second"
    for root, seconds, value in ((first, 1.5, 3.0), (second, 2.5, 4.0)):
        root.mkdir()
        meta = {"method": "contrast", "seconds": str(seconds),
                "pairs": json.dumps({"en-de": {"n": 4, "new_tokens_per_s": seconds * 10}})}
        pq.write_table(table(np.array([0.5, np.nan, 1.25, -0.0, value]), meta=meta), root / "data.parquet")
        pq.write_table(table(meta=meta), root / "timing_only.parquet")
        (root / "run.json").write_text(json.dumps({"n": 3, "seconds": seconds}))
    proc = run_tool(first, second)
    assert proc.returncode == 1
    assert (f"differs: data.parquet: schema metadata 'seconds' differs at (top): 1.5 != 2.5; schema metadata "
            f"'pairs' differs at en-de.new_tokens_per_s: 15.0 != 25.0; column 'score' row 4: 3.0 != 4.0 "
            f"(difference -1.0); 1 of 5 rows differ") in proc.stdout.splitlines()
    proc = run_tool(first, second, "--ignore-key", "seconds", "--ignore-key", "new_tokens_per_s")
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        "differs: data.parquet: column 'score' row 4: 3.0 != 4.0 (difference -1.0); 1 of 5 rows differ",
        "DIFFERENT: 3 files in both: 2 equal, 1 differ; 0 only in the first, 0 only in the second"]
