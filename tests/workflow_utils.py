"""Running the workflow from tests: a small demo config and Snakemake in a subprocess."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "Snakefile"

SMALL_CONFIG = {
    "pairs": ["en-de", "de-en", "en-ru", "ru-en", "en-hi", "hi-en"],
    "dataset": {"name": "demo", "split": "validation", "max_samples": 40},
    "model": {"id": "demo", "name": "demo-small", "dtype": "float32", "device": "cpu"},
    "demo_model": {"seed": 0, "vocab_size": 500, "hidden_size": 32, "intermediate_size": 96,
                   "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2},
    "collect": {"token_budget": 1024},
    "scoring": {"k": 10, "diffmeans": {"k": 10}},  # 96 neurons per layer
}


def write_config(workdir: Path, overrides: dict | None = None, name: str = "config.yaml") -> Path:
    cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in SMALL_CONFIG.items()}
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    path = workdir / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def snakemake(workdir: Path, *args: str, configfile: Path | None = None, check: bool = True,
              timeout: int = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    # targets and flags first: --resources and --configfile take several values and would eat them
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(workdir), *args,
           "--cores", "2", "--resources", "gpu=1"]
    if configfile is not None:
        cmd += ["--configfile", str(configfile)]
    run_env = {**os.environ, "PYTHONPATH": str(ROOT / "workflow" / "scripts"), **(env or {})}
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout, env=run_env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def job_counts(output: str) -> dict[str, int]:
    """Parse the 'Job stats' table of a (dry) run: rule -> number of jobs."""
    counts: dict[str, int] = {}
    in_table = False
    for line in output.splitlines():
        if line.startswith("Job stats:"):
            in_table, counts = True, {}
            continue
        if in_table:
            m = re.match(r"^(\w+)\s+(\d+)\s*$", line.strip())
            if m and m.group(1) != "total":
                counts[m.group(1)] = int(m.group(2))
            elif line.strip().startswith("total") or (not line.strip() and counts):
                in_table = False
    return counts
