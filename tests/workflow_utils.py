"""Running the workflow from tests: a small demo config and Snakemake in a subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "workflow" / "Snakefile"

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


def clean_env() -> dict[str, str]:
    """This environment without a run that a Snakemake started from it would join (neurospec.run.workers)."""
    return {k: v for k, v in os.environ.items() if k not in ("NEUROSPEC_RUN", "NEUROSPEC_RUN_SLURM_JOB")}


def snakemake(workdir: Path, *args: str, configfile: Path | None = None, check: bool = True,
              timeout: int = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    # targets and flags first: --resources and --configfile take several values and would eat them
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(workdir), *args,
           "--cores", "2", "--resources", "gpu=1"]
    if configfile is not None:
        cmd += ["--configfile", str(configfile)]
    run_env = {**clean_env(), "PYTHONPATH": str(ROOT / "workflow" / "scripts"), **(env or {})}
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


def planned_scores(output: str) -> set[str]:
    """The methods whose selection a (dry) run plans: the `score` rule's `scores/{method}.parquet` outputs."""
    return {m.group(1) for line in output.splitlines() if line.strip().startswith("output:")
            for m in re.finditer(r"/scores/(\w+?)\.parquet", line) if not m.group(1).endswith(("_iou", "_stability"))}


_EFFECTIVE_CONFIG = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings
snakefile, workdir, *configfiles = sys.argv[1:]
with SnakemakeApi(OutputSettings()) as api:
    wf = api.workflow(resource_settings=ResourceSettings(cores=1), snakefile=Path(snakefile), workdir=Path(workdir),
                      config_settings=ConfigSettings(configfiles=[Path(c) for c in configfiles]))
    print("NEUROSPEC-CONFIG=" + json.dumps(wf._workflow.config, sort_keys=True))
"""


def effective_config(workdir: Path, *configfiles: Path, env: dict | None = None) -> dict:
    """The config the workflow runs with: the Snakefile's config handling (demo config, or the given
    --configfile(s)), then the schema's defaults; read through Snakemake's API in a child process."""
    run_env = {**os.environ, "PYTHONPATH": str(ROOT / "workflow" / "scripts"), **(env or {})}
    proc = subprocess.run([sys.executable, "-c", _EFFECTIVE_CONFIG, str(SNAKEFILE), str(workdir),
                           *map(str, configfiles)], cwd=workdir, capture_output=True, text=True, timeout=300,
                          env=run_env)
    for line in proc.stdout.splitlines():
        if line.startswith("NEUROSPEC-CONFIG="):
            return json.loads(line.partition("=")[2])
    raise AssertionError(f"no config printed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def report_entries(report_html: str) -> tuple[dict, dict]:
    """The results and categories a Snakemake HTML report embeds: {path: entry} (entry: caption,
    job_properties with the rule's wildcards, data_uri with the file), {category: {subcategory: [paths]}}."""
    decoder = json.JSONDecoder()
    start = report_html.index("var results = ", report_html.index('<script id="results">'))
    results, _ = decoder.raw_decode(report_html, start + len("var results = "))
    start = report_html.index("var categories = ")
    categories, _ = decoder.raw_decode(report_html, start + len("var categories = "))
    return results, categories
