"""The real workflow through a real (single-node, throwaway) SLURM cluster.

The small demo config is run to the activation tables of two pairs with
``--executor slurm``, once unsharded and once with ``collect.shards: 2``, and
the tables are compared with those of a local run of the same config. What is
checked:

* every ``collect_activations`` job was its own SLURM job: one distinct SLURM
  job id per Snakemake job, each with its own log in the plugin's
  ``.snakemake/slurm_logs/rule_<rule>/<wildcards>/<jobid>.log`` layout;
* the GPU request went through: the job's ``sbatch`` call carried
  ``--gpus=1`` and slurmctld recorded ``gres/gpu=1`` for it (and for no CPU
  job);
* the tables equal the local ones (counts exactly, ``act_sum`` to rtol 1e-6),
  also when the sharded run's shards are summed by ``merge_shards`` (there
  ``act_sum`` also to 1e-6 of the table's largest sum: see _assert_same_tables);
* devices inside a SLURM job: the sharded run uses ``model.device: auto`` with
  ``NEUROSPEC_FAKE_GPUS=2`` exported (the machine "has" two GPUs); a job must
  use only the one SLURM gave it (its ``CUDA_VISIBLE_DEVICES``), as ``cuda:0``;
* the SLURM profile's job group: two pairs' collection in one SLURM job, one
  model load (workers) for both.

Skips where no cluster can be started (not root, no slurm-wlm: see
``tests/slurm_cluster.py``). About 5 minutes on 2 cores (cluster start included).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from slurm_cluster import slurm_cluster  # noqa: E402,F401
from workflow_utils import ROOT, SNAKEFILE, snakemake, write_config  # noqa: E402

from neurospec.tables import read_counts  # noqa: E402

pytestmark = [pytest.mark.slurm, pytest.mark.xdist_group("slurm")]  # one worker: one cluster on the host at a time

PAIRS = ("en-de", "ru-en")
RESULTS = "results/demo-small/demo/validation"
MODEL = "demo-small"  # the {model} wildcard of every job
COUNT_COLUMNS = ("active", "nonzero", "gate_active")


def _tables() -> list[str]:
    return [f"{RESULTS}/activations/{p}.parquet" for p in PAIRS]


def _local_run(workdir: Path) -> None:
    cfg = write_config(workdir)
    t0 = time.monotonic()
    # `--configfile=` (one value): a spaced --configfile would take the targets as config files too
    snakemake(workdir, f"--configfile={cfg}", *_tables())
    print(f"local run: {time.monotonic() - t0:.1f}s")


def _run_on_slurm(cluster, workdir: Path, cfg: Path, env: dict | None = None) -> str:
    cmd = [
        sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(workdir),
        f"--configfile={cfg}",
        *cluster.snakemake_args(jobs=4, default_resources={"mem_mb": 1000}),
        "--slurm-keep-successful-logs",
        "--verbose",  # the executor logs every sbatch call at debug level
        *_tables(),
    ]
    run_env = {**os.environ, "PYTHONPATH": str(ROOT / "workflow" / "scripts"), **(env or {})}
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=900, env=run_env)
    elapsed = time.monotonic() - t0
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"snakemake on SLURM failed:\n{log[-8000:]}\n{cluster.logs()}"
    print(f"SLURM run in {workdir.name}: {elapsed:.1f}s")
    return log


def _submissions(log: str) -> dict[str, tuple[str, Path]]:
    """Snakemake job id -> (SLURM job id, its log) from 'Job N has been submitted with SLURM jobid M (log: L).'"""
    found = re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (\S+?)\)\.", log)
    return {job: (slurm_id, Path(path)) for job, slurm_id, path in found}


def _sbatch_calls(log: str) -> list[str]:
    return [m.group(1) for m in re.finditer(r"sbatch call: (.*)", log)]


def _check_slurm_jobs(cluster, workdir: Path, log: str, expected_collect: set[str]) -> dict[str, str]:
    """Each collection job its own SLURM job with a GPU; returns wildcard dir -> SLURM job id."""
    subs = _submissions(log)
    assert subs, log[-4000:]
    slurm_ids = [s for s, _ in subs.values()]
    assert len(set(slurm_ids)) == len(slurm_ids), f"a SLURM job id was reused: {subs}"

    logdir = workdir / ".snakemake" / "slurm_logs"
    collect_dir = logdir / "rule_collect_activations"
    by_wildcards: dict[str, list[str]] = {
        d.name: sorted(f.stem for f in d.glob("*.log")) for d in collect_dir.iterdir() if d.is_dir()
    }
    # one directory per collection job, named by its wildcards (the model, then the pair and shard),
    # holding exactly one log named by its job id
    assert all(name.startswith(f"{MODEL}_") for name in by_wildcards), by_wildcards
    by_wildcards = {name.removeprefix(f"{MODEL}_"): ids for name, ids in by_wildcards.items()}
    assert set(by_wildcards) == expected_collect, by_wildcards
    assert all(len(ids) == 1 for ids in by_wildcards.values()), by_wildcards
    collect_ids = {w: ids[0] for w, ids in by_wildcards.items()}
    assert len(set(collect_ids.values())) == len(collect_ids), collect_ids
    assert set(collect_ids.values()) <= set(slurm_ids)
    for slurm_id, path in subs.values():
        assert path.is_file() and path.stem == slurm_id, (slurm_id, path)

    # the GPU request: the sbatch call of each collection job asked for --gpus=1 ...
    calls = _sbatch_calls(log)
    collect_calls = [c for c in calls if "rule_collect_activations" in c]
    other_calls = [c for c in calls if "rule_collect_activations" not in c]
    assert len(collect_calls) == len(expected_collect), calls
    assert all(re.search(r"--gpus=1\b", c) for c in collect_calls), collect_calls
    assert not any("--gpus" in c or "--gres" in c for c in other_calls), other_calls
    # ... and slurmctld granted it (finished jobs stay visible for MinJobAge=300 s)
    for slurm_id in collect_ids.values():
        job = cluster.run("scontrol", "show", "job", slurm_id)
        assert re.search(r"gres[:/]gpu[:=]1", job), job
        assert "JobState=COMPLETED" in job, job
    for slurm_id in set(slurm_ids) - set(collect_ids.values()):
        job = cluster.run("scontrol", "show", "job", slurm_id)
        assert "gres" not in job.lower(), job
    return collect_ids


def _assert_same_tables(got_dir: Path, ref_dir: Path, sharded: bool = False) -> None:
    for pair in PAIRS:
        got, got_meta = read_counts(got_dir / RESULTS / "activations" / f"{pair}.parquet")
        ref, ref_meta = read_counts(ref_dir / RESULTS / "activations" / f"{pair}.parquet")
        assert len(got) == len(ref) == 3 * 96
        got = got.sort_values(["layer", "neuron"]).reset_index(drop=True)
        ref = ref.sort_values(["layer", "neuron"]).reset_index(drop=True)
        for col in ("layer", "neuron", *COUNT_COLUMNS):
            np.testing.assert_array_equal(got[col].to_numpy(), ref[col].to_numpy(), err_msg=f"{pair} {col}")
        got_sum, ref_sum = got["act_sum"].to_numpy(), ref["act_sum"].to_numpy()
        # Unsharded, the same batches run through the same kernels: rtol 1e-6 (in practice bit-equal).
        # Sharded, the batches hold other sentences, so float32 matmuls round differently per token;
        # a neuron whose positive and negative inputs cancel then differs by ~1e-5 relative to its own
        # near-zero sum (seen: 6e-5 absolute on sums up to 285). So also allow 1e-6 of the table's
        # scale, still ~4x below what float32 rounding can reach and far below any real difference.
        atol = 1e-6 * np.abs(ref_sum).max() if sharded else 0.0
        np.testing.assert_allclose(got_sum, ref_sum, rtol=1e-6, atol=atol, err_msg=f"{pair} act_sum")
        for key in ("n_tokens", "n_sentences", "n_truncated", "n_skipped", "counted_lang", "device"):
            assert got_meta[key] == ref_meta[key], (pair, key, got_meta[key], ref_meta[key])


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The reference: the same config and targets, run locally (unsharded)."""
    workdir = tmp_path_factory.mktemp("local")
    _local_run(workdir)
    return workdir


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster, tmp_path_factory):
    """The same config and targets through SLURM (unsharded): (workdir, Snakemake's log)."""
    workdir = tmp_path_factory.mktemp("slurm")
    return workdir, _run_on_slurm(slurm_cluster, workdir, write_config(workdir))


def test_collection_on_slurm_matches_local(slurm_cluster, slurm_run, local_run):
    workdir, log = slurm_run
    ids = _check_slurm_jobs(slurm_cluster, workdir, log, expected_collect=set(PAIRS))
    assert set(ids) == set(PAIRS)
    _assert_same_tables(workdir, local_run)


@pytest.fixture(scope="module")
def sharded_run(slurm_cluster, slurm_run, tmp_path_factory):
    """The same config sharded in two, through SLURM: (workdir, Snakemake's log, the GPU lock dir,
    whether the jobs saw stand-in GPUs)."""
    workdir = tmp_path_factory.mktemp("slurm-sharded")
    # the demo model and pair tables do not depend on sharding: reuse those of the unsharded run
    # (three SLURM jobs, ~30 s, saved; copies keep their mtimes, so nothing upstream reruns)
    for part in ("results/models", "results/data"):
        shutil.copytree(slurm_run[0] / part, workdir / part)
    # model.device auto: claim_device runs for real inside each SLURM job (see module docstring)
    cfg = write_config(workdir, {"collect": {"token_budget": 1024, "shards": 2}, "model": {"device": "auto"}})
    lock_dir = workdir.parent / f"{workdir.name}-gpu-locks"
    pinned = slurm_cluster.fake_devices_are_char_devices
    # Without char-device stand-ins slurmd binds no device (no CUDA_VISIBLE_DEVICES in the job), so the
    # fake GPUs are only exported where the scheduler pins them; test_slurm_pins_each_jobs_device
    # skips otherwise.
    env = {"NEUROSPEC_FAKE_GPUS": "2", "NEUROSPEC_GPU_LOCK_DIR": str(lock_dir)} if pinned else {}
    log = _run_on_slurm(slurm_cluster, workdir, cfg, env=env)
    return workdir, log, lock_dir, pinned


def test_sharded_collection_on_slurm_matches_local(slurm_cluster, sharded_run, local_run):
    workdir, log, _, _ = sharded_run
    expected = {f"{p}_{s}" for p in PAIRS for s in range(2)}
    _check_slurm_jobs(slurm_cluster, workdir, log, expected_collect=expected)
    slurm_logs = workdir / ".snakemake" / "slurm_logs"
    assert sorted(d.name for d in slurm_logs.iterdir()) == ["rule_collect_activations", "rule_merge_shards"]
    assert sorted(d.name for d in (slurm_logs / "rule_merge_shards").iterdir()) == sorted(f"{MODEL}_{p}" for p in PAIRS)
    # the shards were temp() and are gone; the summed tables equal the local unsharded ones
    assert not list((workdir / RESULTS / "activations" / "shards").glob("*.parquet"))
    _assert_same_tables(workdir, local_run, sharded=True)


def test_slurm_pins_each_jobs_device(sharded_run):
    """With two stand-in GPUs exported, every job used the device SLURM gave it: it saw one GPU (its
    CUDA_VISIBLE_DEVICES), used it as cuda:0 (a stand-in computes on the CPU), and its lock is named by
    the physical id SLURM gave it."""
    workdir, _, lock_dir, pinned = sharded_run
    if not pinned:
        pytest.skip("the GPU stand-ins are plain files (mknod not allowed here), so slurmd binds no device "
                    "and there is no pinning to check")
    assert {p.name for p in lock_dir.glob("gpu*.lock")} <= {"gpu0.lock", "gpu1.lock"}
    for pair in PAIRS:
        for shard in range(2):
            text = (workdir / f"results/logs/demo-small/demo/validation/activations/{pair}.{shard}-of-2.log"
                    ).read_text()
            assert re.search(r" on cpu\b", text), text[-2000:]
            assert re.search(r"of model worker model-\w+-cuda_0 ", text), text[-2000:]


def _profile_group_args() -> list[str]:
    """The job-group settings of workflow/profiles/slurm/config.yaml, as command-line arguments."""
    import yaml

    profile = yaml.safe_load((ROOT / "workflow" / "profiles" / "slurm" / "config.yaml").read_text())
    args = []
    for key in ("groups", "group-components", "resources", "set-resource-scopes"):
        assert profile.get(key), f"workflow/profiles/slurm/config.yaml lacks {key}"
        args += [f"--{key}", *profile[key]]
    return args


def test_grouped_collection_loads_the_model_once_per_slurm_job(slurm_cluster, slurm_run, local_run, tmp_path):
    """The SLURM profile's job group: both pairs' collection in ONE SLURM job (asking for one GPU),
    served by one model worker that loaded the model once; the tables equal the local ones."""
    workdir = tmp_path / "slurm-grouped"
    workdir.mkdir()
    for part in ("results/models", "results/data"):
        shutil.copytree(slurm_run[0] / part, workdir / part)
    cfg = write_config(workdir)
    cmd = [
        sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(workdir),
        f"--configfile={cfg}",
        *slurm_cluster.snakemake_args(jobs=4, default_resources={"mem_mb": 1000}),
        *_profile_group_args(),
        "--slurm-keep-successful-logs", "--verbose",
        *_tables(),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "workflow" / "scripts")}
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=900, env=env)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"snakemake on SLURM failed:\n{log[-8000:]}\n{slurm_cluster.logs()}"
    calls = [c for c in _sbatch_calls(log) if "gpu_collect" in c or "rule_collect_activations" in c]
    assert len(calls) == 1, _sbatch_calls(log)  # one SLURM job for both pairs
    assert re.search(r"--gpus=1\b", calls[0]), calls[0]
    worker_logs = list((workdir / "results" / "logs" / "workers").glob("*model*.log"))
    assert len(worker_logs) == 1, worker_logs
    text = worker_logs[0].read_text()
    assert text.count("loading model") == 1 and text.count("task done") == len(PAIRS), text
    _assert_same_tables(workdir, local_run)
