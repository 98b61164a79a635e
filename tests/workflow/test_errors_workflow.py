"""Through snakemake: a full disk or a read-only results folder, where a job writes, is one line
``neurospec: error: ...`` naming the file and the cause, a failed run, and nothing partial left."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from test_errors import _left, full_disk, read_only
from workflow_utils import ROOT, clean_env, copy_run, snakemake, write_config

RESULTS = "results/demo-small/demo/validation"
ACTIVATIONS = f"{RESULTS}/activations"
FIGURE = f"{RESULTS}/figures/activation_probability.png"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, shared_run) -> Path:
    d = tmp_path_factory.mktemp("errors-wf")
    copy_run(shared_run[0], d, "results/models")  # the same demo model (demo_model as SMALL_CONFIG's)
    write_config(d, {"pairs": ["en-de", "de-en"], "dataset": {"name": "demo", "split": "validation",
                                                              "max_samples": 12}})
    return d


def _fails_with(proc, line: str) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert f"neurospec: error: {line}" in out, out[-3000:]
    assert "Traceback" not in out and "a bug" not in out, out[-3000:]
    return out


def test_full_disk_in_collection_is_one_line_and_leaves_nothing(workdir):
    with full_disk(workdir / ACTIVATIONS) as disk:
        proc = snakemake(workdir, f"{ACTIVATIONS}/en-de.parquet", configfile=workdir / "config.yaml", check=False)
        _fails_with(proc, f"cannot write {ACTIVATIONS}/en-de.parquet: no space left on device (")
        out = proc.stdout + proc.stderr
        assert f"kB needed, 0 bytes free on {ACTIVATIONS}); free space there" in out \
            or f"bytes needed, 0 bytes free on {ACTIVATIONS}); free space there" in out, out[-3000:]
        assert _left(disk) == []  # no table, no temporary
    # the job's log has the line too
    log = workdir / "results/logs/demo-small/demo/validation/activations/en-de.log"
    assert "neurospec: error: cannot write" in log.read_text()


def test_full_disk_in_a_figure_is_one_line_and_leaves_nothing(workdir):
    figures = workdir / FIGURE
    with full_disk(figures.parent) as disk:
        proc = snakemake(workdir, FIGURE, configfile=workdir / "config.yaml", check=False)
        _fails_with(proc, f"cannot write {FIGURE}: no space left on device (")
        assert _left(disk) == []
    # what came before the figure is complete: both count tables
    assert sorted(p.name for p in (workdir / ACTIVATIONS).iterdir()) == ["de-en.parquet", "en-de.parquet"]


def test_read_only_results_folder_is_refused_before_any_job(workdir):
    """A read-only folder where a job would write: the run is refused as it starts, with one line (without
    that check, Snakemake's own removal of the job's old outputs fails first, with a traceback)."""
    figures = workdir / FIGURE
    with read_only(figures.parent) as ro:
        proc = snakemake(workdir, FIGURE, configfile=workdir / "config.yaml", check=False)
        out = _fails_with(proc, f"cannot write {RESULTS}/figures: read-only file system (1 output or log file(s) "
                                f"of this run go there, e.g. {FIGURE}); remount it read-write, or run the "
                                "workflow in a writable directory")
        assert "Error in rule" not in out and "rule figure_activation_probability" not in out.split("Job stats")[-1]
        assert _left(ro) == []
    snakemake(workdir, FIGURE, configfile=workdir / "config.yaml")
    assert figures.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_read_only_folder_inside_a_job_is_one_line(tmp_path):
    """The job's own write into a read-only folder (one that became read-only after the run started, or a
    path the start could not see): one line from the task, with and without workers."""
    with read_only(tmp_path / "ro") as ro:
        for workers in ("1", "0"):
            proc = subprocess.run(
                [sys.executable, "-c", "from neurospec.run.workers import run_task; run_task("
                 "'neurospec.atomic:write_json', path=%r, value={'a': 1})" % str(ro / "x.json")],
                capture_output=True, text=True, cwd=tmp_path, timeout=300,
                env={**clean_env(), "PYTHONPATH": str(ROOT / "workflow" / "scripts"), "NEUROSPEC_WORKERS": workers,
                     "NEUROSPEC_RUN": f"{socket.gethostname()}:{os.getpid()}",
                     # a test's own task: workers run only registered ones (neurospec.run.workers.TASKS)
                     "NEUROSPEC_EXTRA_TASKS": "neurospec.atomic:write_json"})
            assert proc.returncode == 1, proc.stderr
            assert proc.stderr.strip().splitlines()[-1].endswith(  # (without workers: after the log's time)
                f"neurospec: error: cannot write {ro / 'x.json'}: read-only file system; remount it read-write, "
                "or run the workflow in a writable directory"), proc.stderr
            assert "Traceback" not in proc.stderr
        assert _left(ro) == []
