"""Tests of the throwaway SLURM cluster (tests/slurm_cluster.py) and profiles.

The cluster tests run a tiny Snakefile written into tmp_path (not the
project's workflow) through ``snakemake --executor slurm`` and check that
every rule became its own SLURM job and that ``resources: gpu=1`` went
through SLURM's gres/gpu path.  They skip where no cluster can be started
(not root, slurm-wlm/munge not installed: see .ci/install-slurm.sh).
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from slurm_cluster import cluster_available, slurm_cluster  # noqa: E402,F401

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.xdist_group("slurm")  # with test_slurm_workflow.py: one cluster on the host at a time

TOY_SNAKEFILE = textwrap.dedent(r"""
    rule all:
        input:
            "out/cpu.txt",
            "out/gpu.txt",


    rule cpu_job:
        output:
            "out/cpu.txt",
        shell:
            "echo job=${{SLURM_JOB_ID:-}} gpus=${{SLURM_JOB_GPUS:-}}"
            " cuda=${{CUDA_VISIBLE_DEVICES:-}} > {output}"


    rule gpu_job:
        output:
            "out/gpu.txt",
        resources:
            gpu=1,
        shell:
            "echo job=${{SLURM_JOB_ID:-}} gpus=${{SLURM_JOB_GPUS:-}}"
            " cuda=${{CUDA_VISIBLE_DEVICES:-}} > {output}"
    """)


def _parse(path: Path) -> dict[str, str]:
    return dict(tok.split("=", 1) for tok in path.read_text().split() if "=" in tok)


def _write_toy(tmp_path: Path) -> Path:
    wd = tmp_path / "toy"
    wd.mkdir()
    (wd / "Snakefile").write_text(TOY_SNAKEFILE)
    return wd


@pytest.mark.slurm
def test_cluster_is_up(slurm_cluster):
    assert slurm_cluster.node_state() == "idle"
    out = slurm_cluster.run("sinfo", "-h", "-N", "-o", "%N %P %G")
    assert slurm_cluster.hostname in out
    assert f"gpu:{slurm_cluster.gpus}" in out
    for name, pid in slurm_cluster.pids.items():
        assert Path(f"/proc/{pid}").exists(), f"{name} (pid {pid}) is not running"


@pytest.mark.slurm
def test_snakemake_rules_run_as_slurm_jobs(slurm_cluster, tmp_path):
    wd = _write_toy(tmp_path)
    cmd = [
        "snakemake",
        "--snakefile",
        str(wd / "Snakefile"),
        "--directory",
        str(wd),
        *slurm_cluster.snakemake_args(jobs=2),
        "--slurm-keep-successful-logs",
        "--verbose",
    ]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    elapsed = time.monotonic() - t0
    log = proc.stdout + proc.stderr
    assert (
        proc.returncode == 0
    ), f"snakemake failed:\n{log[-6000:]}\n{slurm_cluster.logs()}"

    cpu, gpu = _parse(wd / "out/cpu.txt"), _parse(wd / "out/gpu.txt")
    # each rule ran inside its own SLURM job
    assert cpu["job"].isdigit() and gpu["job"].isdigit(), (cpu, gpu)
    assert cpu["job"] != gpu["job"]
    # ... which the executor really submitted with sbatch
    # "Job 1 has been submitted with SLURM jobid 7 (log: ...)."
    submitted = set(re.findall(r"submitted with SLURM jobid (\d+)", log))
    assert {cpu["job"], gpu["job"]} <= submitted, (submitted, log[-3000:])

    # the gpu request went through the real gres/gpu path: slurmd bound a
    # device and exported its index (the jobstep executor strips
    # SLURM_JOB_GPUS before its nested srun; CUDA_VISIBLE_DEVICES survives)
    if slurm_cluster.fake_devices_are_char_devices:
        assert gpu["cuda"] in {str(i) for i in range(slurm_cluster.gpus)}, gpu
    # ... and the CPU rule got no GPU
    assert cpu["gpus"] == "" and cpu["cuda"] == "", cpu
    # slurmctld recorded the gres request on the gpu job only
    gpu_job = slurm_cluster.run("scontrol", "show", "job", gpu["job"])
    cpu_job = slurm_cluster.run("scontrol", "show", "job", cpu["job"])
    assert re.search(r"gres[:/]gpu[:=]1", gpu_job), gpu_job
    assert "gres" not in cpu_job.lower(), cpu_job
    assert "JobState=COMPLETED" in gpu_job and "JobState=COMPLETED" in cpu_job
    print(f"toy workflow through SLURM took {elapsed:.1f}s")


PROFILE_TOY = textwrap.dedent(r"""
    rule all:
        input:
            "out/act.txt",
            "out/cpu.txt",


    rule collect_activations:
        output:
            "out/act.txt",
        resources:
            gpu=1,
        shell:
            "echo job=${{SLURM_JOB_ID:-}} cuda=${{CUDA_VISIBLE_DEVICES:-}} > {output}"


    rule cpu_job:
        output:
            "out/cpu.txt",
        shell:
            "echo job=${{SLURM_JOB_ID:-}} > {output}"
    """)


def _job_field(text: str, name: str) -> str:
    m = re.search(rf"\b{name}=(\S+)", text)
    return m.group(1) if m else ""


@pytest.mark.slurm
def test_slurm_profile_on_cluster(slurm_cluster, tmp_path):
    """workflow/profiles/slurm, shrunk to fit the test node, drives real sbatch calls."""
    import yaml

    prof = yaml.safe_load((REPO / "workflow/profiles/slurm/config.yaml").read_text())
    # the only edits: fit a 64 GB / 8-CPU request onto this small node and name
    # the partition (the shipped profile leaves it to the user)
    act = prof["set-resources"]["collect_activations"]
    cpus_per_gpu = min(2, slurm_cluster.cpus)
    act.update(mem_mb=500, cpus_per_gpu=cpus_per_gpu)
    prof["default-resources"].update(
        mem_mb=500, slurm_partition=slurm_cluster.partition
    )
    prof["latency-wait"] = 5
    pdir = tmp_path / "profile"
    pdir.mkdir()
    (pdir / "config.yaml").write_text(yaml.safe_dump(prof))
    wd = tmp_path / "toy"
    wd.mkdir()
    (wd / "Snakefile").write_text(PROFILE_TOY)

    proc = subprocess.run(
        [
            "snakemake",
            "--profile",
            str(pdir),
            "--snakefile",
            str(wd / "Snakefile"),
            "--directory",
            str(wd),
            "--slurm-no-account",
            "--slurm-status-command",
            "squeue",
            "--slurm-init-seconds-before-status-checks",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    log = proc.stdout + proc.stderr
    assert (
        proc.returncode == 0
    ), f"snakemake failed:\n{log[-6000:]}\n{slurm_cluster.logs()}"

    act_job = _parse(wd / "out/act.txt")["job"]
    cpu_job = _parse(wd / "out/cpu.txt")["job"]
    a = slurm_cluster.run("scontrol", "show", "job", act_job)
    c = slurm_cluster.run("scontrol", "show", "job", cpu_job)
    # GPU rule: --gpus=1, --cpus-per-gpu (not the default cpus_per_task=1),
    # runtime 15 min per pair from set-resources (its job group holds one pair here)
    assert re.search(r"gres[:/]gpu[:=]1", a), a
    assert _job_field(a, "NumCPUs") == str(cpus_per_gpu), a
    assert _job_field(a, "TimeLimit") == "00:15:00", a
    # CPU rule: default-resources (1 CPU, 60 min, no GPU)
    assert _job_field(c, "NumCPUs") == "1", c
    assert _job_field(c, "TimeLimit") == "01:00:00", c
    assert "gres" not in c.lower(), c


@pytest.mark.parametrize("profile", ["slurm", "local-multigpu"])
def test_profiles_parse(profile, tmp_path):
    """Both shipped profiles are accepted by snakemake (dry run of the toy)."""
    pytest.importorskip("snakemake_executor_plugin_slurm")
    wd = _write_toy(tmp_path)
    proc = subprocess.run(
        [
            "snakemake",
            "--profile",
            str(REPO / "workflow" / "profiles" / profile),
            "--snakefile",
            str(wd / "Snakefile"),
            "--directory",
            str(wd),
            "--dry-run",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "gpu_job" in proc.stdout + proc.stderr


def gpu_rules() -> set[str]:
    """The rules of the workflow whose resources ask for a GPU (gpu=1), read from the rule files."""
    found = set()
    for path in (REPO / "workflow" / "rules").glob("*.smk"):
        for rule, body in re.findall(r"^\s*rule (\w+):\n(.*?)(?=^\s*rule |\Z)", path.read_text(), re.S | re.M):
            if re.search(r"^\s+resources:\n(?:\s+.*\n)*?\s+gpu=1,", body, re.M):
                found.add(rule)
    return found


def test_every_gpu_rule_has_its_resources_in_the_profiles():
    """A GPU rule without set-resources in workflow/profiles/slurm would get the CPU defaults (8 GB, 60 min)."""
    import yaml

    rules = gpu_rules()
    assert {"collect_activations", "ablation", "translate", "translate_ablated"} <= rules
    slurm = yaml.safe_load((REPO / "workflow/profiles/slurm/config.yaml").read_text())["set-resources"]
    local = yaml.safe_load((REPO / "workflow/profiles/local-multigpu/config.yaml").read_text())["set-resources"]
    for rule in rules:
        assert slurm[rule]["gpu"] == 1 and slurm[rule]["mem_mb"] >= 32000 and slurm[rule]["runtime"] > 0, rule
        assert local[rule]["gpu"] == 1, rule
