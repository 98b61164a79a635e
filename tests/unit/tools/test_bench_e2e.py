"""The end-to-end benchmark's reading of the logs: one load, forward seconds, the collection stage."""

from __future__ import annotations

import math

import pytest

from neurospec.tools import bench_e2e


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_read_logs_takes_load_forward_and_stage_from_the_logs(tmp_path):
    _write(tmp_path / "results/logs/workers/x-model-ab-auto.log",
           "10:00:00.000 INFO model worker model-ab-auto (pid 1) for run pid 2: listening\n"
           "10:00:00.001 INFO task 1 of model worker model-ab-auto (pid 1): neurospec.collect.collect:collect_to_file\n"
           "10:00:04.500 INFO model loaded in 4.10 s on cpu (sdpa attention); kept for the rest of the run\n"
           "10:00:05.000 INFO task done in 5.00 s (worker peak RSS 500 MiB)\n"
           "10:00:05.300 INFO task 2 of model worker model-ab-auto (pid 1): neurospec.collect.collect:collect_to_file\n"
           "10:00:06.250 INFO task done in 0.95 s (worker peak RSS 500 MiB)\n"
           "10:00:06.300 INFO shut down by the end of the run after 2 task(s)\n")
    for pair, seconds in (("en-de", 0.4), ("de-en", 0.9)):
        _write(tmp_path / f"results/logs/bench/ec40/validation/activations/{pair}.log",
               f"10:00:05.000 INFO done: 1234 counted tokens in {seconds} s (3000 prompt tokens/s)\n")
    got = bench_e2e._read_logs(tmp_path, ["en-de", "de-en"])
    assert got["model_loads"] == 1 and got["load_s"] == pytest.approx(4.5)
    assert got["forward_s"] == pytest.approx(1.3)
    assert got["stage_s"] == pytest.approx(6.25)  # listening at 0.000 to the last task's end at 6.250


def test_two_model_workers_leave_the_stage_undefined(tmp_path):
    for name in ("a", "b"):
        _write(tmp_path / f"results/logs/workers/x-model-{name}.log",
               "10:00:00.000 INFO model worker (pid 1): listening\n"
               "10:00:01.000 INFO model loaded in 1.00 s\n10:00:02.000 INFO task done in 2.00 s\n")
    _write(tmp_path / "results/logs/bench/demo/validation/activations/en-de.log",
           "done: 5 counted tokens in 0.5 s\n")
    got = bench_e2e._read_logs(tmp_path, ["en-de"])
    assert got["model_loads"] == 2 and math.isnan(got["stage_s"])
