"""End-to-end benchmarks: the Quick-start demo, and N pairs collected through the workflow.

    python -m neurospec.tools.bench --demo [--cores 1]
    python -m neurospec.tools.bench --e2e 20 [--e2e-model demo|<local model dir>] [--sentences 200] [--cores 1]

``--demo`` runs the Quick start's first command (``snakemake --cores 1 --resources gpu=1`` with
config/config.yaml, every stage) in a fresh temporary directory and prints its wall time and where
it went: the seconds of every task inside the workers, by task, and the rest (Snakemake, the jobs'
own start-up, worker start-up).

It writes a config for N directions (EC40 validation from ``../shared/ec40`` when present, else the
demo corpus), builds the pair tables and the model in a first, untimed run, then times
``snakemake <the N activation tables> --cores C --resources gpu=1`` in a temporary directory
and reads off the logs:

- ``load_s``: the model worker's start to "model loaded" (Python, torch and transformers imports and
  ``load_model``: what every job paid before workers existed);
- ``forward_s``: the sum of the collector's own seconds over the N jobs (batches through the model,
  counting included);
- ``wall_s``: the whole ``snakemake`` command (start-up and DAG included);
- ``ratio``: wall_s / (load_s + forward_s). 1.0 would mean nothing but one load and the forward
  passes; the rest is Snakemake and the N jobs' own start-up;
- ``stage_s`` and ``stage_ratio``: the collection stage alone, from the model worker's start (the
  first collection job's first step) to its last task's end, over (load_s + forward_s): what the
  wall time adds to the jobs between them, without Snakemake's own start, DAG and end.

With ``--e2e-baseline`` the same timed run is repeated with ``NEUROSPEC_WORKERS=0`` (every job loads
the model itself, as before workers), for a side-by-side ratio measured in the same session.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[4]
SHARED_EC40 = ROOT.parent / "shared" / "ec40"
STAMP = re.compile(r"^(\d\d:\d\d:\d\d\.\d{3}) ")


def _pairs(n: int) -> list[str]:
    from ..data.demo import available_languages

    langs = available_languages()
    pairs = [p for x in langs for p in (f"en-{x}", f"{x}-en")]
    if n > len(pairs):
        raise SystemExit(f"--e2e {n}: at most {len(pairs)} pairs")
    return pairs[:n]


def _config(pairs: list[str], model: str, sentences: int) -> dict:
    ec40 = (SHARED_EC40 / "Ntrex-eval-set").is_dir()
    dataset = ({"name": "ec40", "split": "validation", "local_dir": str(SHARED_EC40), "max_samples": sentences}
               if ec40 else {"name": "demo", "split": "validation", "max_samples": sentences})
    return {"pairs": pairs, "dataset": dataset,
            "model": {"id": model, "name": "bench", "dtype": "float32" if model == "demo" else "auto",
                      "device": "auto"}}


def _snakemake(workdir: Path, config: Path, targets: list[str], cores: int, env: dict | None = None
               ) -> float:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "workflow" / "Snakefile"), "--directory", str(workdir),
           *targets, "--cores", str(cores), "--resources", "gpu=1", f"--configfile={config}", "--quiet", "all"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "workflow" / "scripts"), **(env or {})})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"snakemake failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return wall


def _seconds(a: str, b: str) -> float:
    fmt = "%H:%M:%S.%f"
    return (datetime.strptime(b, fmt) - datetime.strptime(a, fmt)).total_seconds() % 86400


def _read_logs(workdir: Path, pairs: list[str]) -> dict:
    """load_s (from the model worker's log) and forward_s (from the N collection job logs)."""
    worker_logs = sorted((workdir / "results/logs/workers").glob("*model*.log"))
    loads, n_loads = 0.0, 0
    first, last = None, None  # the collection stage: the worker's start to its last task's end
    for path in worker_logs:
        lines = path.read_text(errors="replace").splitlines()
        start = next((STAMP.match(ln).group(1) for ln in lines if STAMP.match(ln) and "listening" in ln), None)
        first = first or start
        for ln in lines:
            m = STAMP.match(ln)
            if m and "model loaded in" in ln and start:
                loads += _seconds(start, m.group(1))
                n_loads += 1
            if m and "task done in" in ln:
                last = m.group(1)
    forward = 0.0
    for pair in pairs:
        text = (workdir / f"results/logs/bench/ec40/validation/activations/{pair}.log")
        if not text.exists():
            text = workdir / f"results/logs/bench/demo/validation/activations/{pair}.log"
        m = re.search(r"done: \d+ counted tokens in ([\d.]+) s", text.read_text())
        forward += float(m.group(1)) if m else float("nan")
    stage = _seconds(first, last) if first and last and len(worker_logs) == 1 else float("nan")
    return {"load_s": loads, "model_loads": n_loads, "forward_s": forward, "stage_s": stage}


def run(n_pairs: int, model: str = "demo", sentences: int = 200, cores: int = 1, baseline: bool = False,
        keep: bool = False) -> dict:
    pairs = _pairs(n_pairs)
    model_id = str(Path(model).resolve()) if model not in ("demo", "gemma3-270m") else model
    workdir = Path(tempfile.mkdtemp(prefix="neurospec-e2e-"))
    try:
        config = workdir / "config.yaml"
        config.write_text(yaml.safe_dump(_config(pairs, model_id, sentences), sort_keys=False))
        dataset = yaml.safe_load(config.read_text())["dataset"]["name"]
        tables = [f"results/data/{dataset}/validation/{p}.parquet" for p in pairs]
        model_dirs = {"demo": ["results/models/demo"], "gemma3-270m": ["results/models/gemma3-270m"]}
        _snakemake(workdir, config, tables + model_dirs.get(model_id, []), cores)  # untimed: inputs
        targets = [f"results/bench/{dataset}/validation/activations/{p}.parquet" for p in pairs]
        result = {"pairs": n_pairs, "sentences_per_pair": sentences, "model": model, "cores": cores,
                  "dataset": dataset}
        wall = _snakemake(workdir, config, targets, cores)
        result.update(_read_logs(workdir, pairs), wall_s=wall)
        result["ratio"] = wall / (result["load_s"] + result["forward_s"])
        result["stage_ratio"] = result["stage_s"] / (result["load_s"] + result["forward_s"])
        if baseline:
            shutil.rmtree(workdir / "results/bench")
            shutil.rmtree(workdir / "results/logs", ignore_errors=True)
            base_wall = _snakemake(workdir, config, targets, cores, env={"NEUROSPEC_WORKERS": "0"})
            result["wall_without_workers_s"] = base_wall
            result["speedup"] = base_wall / wall
        return result
    finally:
        if keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _task_seconds(workdir: Path) -> dict[str, list[float]]:
    """Seconds of every task the workers ran, by task (from the worker logs)."""
    out: dict[str, list[float]] = {}
    for path in (workdir / "results/logs/workers").glob("*.log"):
        current = None
        for ln in path.read_text(errors="replace").splitlines():
            m = re.search(r"INFO task \d+ of \w+ worker \S+ \(pid \d+\): (\S+)", ln)
            if m:
                current = m.group(1)
                continue
            m = re.search(r"task done in ([\d.]+) s", ln)
            if m and current:
                out.setdefault(current, []).append(float(m.group(1)))
                current = None
    return out


def demo(cores: int = 1, keep: bool = False) -> dict:
    """The Quick-start demo from scratch in a temporary directory: wall time and where it went."""
    workdir = Path(tempfile.mkdtemp(prefix="neurospec-demo-"))
    try:
        cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "workflow" / "Snakefile"), "--directory", str(workdir),
               f"--configfile={ROOT / 'config' / 'config.yaml'}", "--cores", str(cores), "--resources", "gpu=1",
               "--quiet", "all"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT / "workflow" / "scripts")})
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"the demo failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        tasks = _task_seconds(workdir)
        n_jobs = sum(len(v) for v in tasks.values())
        in_tasks = sum(sum(v) for v in tasks.values())
        return {"wall_s": wall, "cores": cores, "jobs": n_jobs, "task_s": in_tasks,
                "by_task": {k: {"jobs": len(v), "seconds": sum(v)} for k, v in sorted(tasks.items())}}
    finally:
        if keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def demo_report(result: dict) -> str:
    lines = [f"Quick-start demo, --cores {result['cores']}: {result['wall_s']:.1f} s wall, {result['jobs']} jobs",
             f"  {'task':<44}{'jobs':>6}{'seconds':>10}"]
    for task, v in sorted(result["by_task"].items(), key=lambda kv: -kv[1]["seconds"]):
        lines.append(f"  {task:<44}{v['jobs']:>6}{v['seconds']:>10.1f}")
    lines.append(f"  {'inside tasks (workers)':<50}{result['task_s']:>10.1f}")
    lines.append(f"  {'the rest: Snakemake, job and worker start-up':<50}{result['wall_s'] - result['task_s']:>10.1f}"
                 + ("" if result["cores"] == 1 else "  (jobs overlap with --cores > 1)"))
    return "\n".join(lines)


def report(result: dict) -> str:
    lines = [f"{result['pairs']} pairs x {result['sentences_per_pair']} sentences ({result['dataset']}), model "
             f"{result['model']}, --cores {result['cores']}",
             f"  model loads: {result['model_loads']}   load {result['load_s']:.1f} s   forward {result['forward_s']:.1f} s"
             f"   wall {result['wall_s']:.1f} s   wall / (load + forward) = {result['ratio']:.2f}",
             f"  collection stage (the model worker's start to its last task's end) {result['stage_s']:.1f} s"
             f"   stage / (load + forward) = {result['stage_ratio']:.2f}   (the rest of the wall time: Snakemake's"
             f" start, DAG, end)"]
    if "wall_without_workers_s" in result:
        lines.append(f"  without workers (one load per job): wall {result['wall_without_workers_s']:.1f} s; "
                     f"workers are {result['speedup']:.1f}x faster")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m neurospec.tools.bench_e2e N
    out = run(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
    print(json.dumps(out, indent=1))
