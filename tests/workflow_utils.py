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
SHARED_EC40 = ROOT.parent / "shared" / "ec40"  # the real EC40 files beside the checkout (tests skip without)
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


# The shared run's config (tests/workflow/conftest.py: shared_run): SMALL_CONFIG with every stage on at test size
SHARED_CONFIG = ROOT / ".test" / "config" / "config.yaml"


def _merged(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def write_shared_config(workdir: Path, overrides: dict | None = None, name: str = "config.yaml") -> Path:
    """The shared run's config (.test/config/config.yaml) with `overrides` merged in at any depth
    ({"evaluate": {"ablation": {"seed": 0}}} changes that one key), written to workdir/name."""
    cfg = _merged(yaml.safe_load(SHARED_CONFIG.read_text()), overrides or {})
    path = workdir / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def copy_run(src: Path, dst: Path, *subs: str) -> Path:
    """Copy a finished run's folder (or only its `subs`) into dst, mtimes kept (shutil.copy2), with
    Snakemake's metadata but not its locks: Snakemake sees the copy as finished as the original."""
    import shutil

    ignore = shutil.ignore_patterns("locks", "incomplete")
    for sub in subs or (".",):
        shutil.copytree(src / sub, dst / sub, ignore=ignore, dirs_exist_ok=True)
    return dst


def once_per_session(tmp_path_factory, name: str, make) -> Path:
    """The folder `name` that make(folder) fills, made once per test session. Without pytest-xdist, a new
    temporary folder; under it, the folder in the workers' common temporary folder, made by the first worker
    to ask while it holds a file lock that the others wait on, then marked done; a failure is marked too,
    and the other workers fail at once with its message instead of making it again."""
    from filelock import FileLock

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        folder = tmp_path_factory.mktemp(name)
        make(folder)
        return folder
    root = tmp_path_factory.getbasetemp().parent  # this session's, above each worker's own
    folder, done, failed = root / name, root / f"{name}.done", root / f"{name}.failed"
    with FileLock(str(root / f"{name}.lock")):
        if failed.is_file():
            raise AssertionError(f"{name}: making it failed in another worker:\n{failed.read_text()}")
        if not done.is_file():
            folder.mkdir(exist_ok=True)
            try:
                make(folder)
            except BaseException as exc:
                failed.write_text(f"{type(exc).__name__}: {exc}")
                raise
            done.write_text("")
    return folder


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


_DRY_RUNS = """
import contextlib, io, json, os, sys, traceback
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, ResourceSettings
snakefile, cases = Path(sys.argv[1]), json.loads(sys.stdin.read())
for case in cases:
    os.chdir(case["workdir"])
    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            with SnakemakeApi(OutputSettings()) as api:
                wf = api.workflow(resource_settings=ResourceSettings(cores=2, resources={"gpu": 1}),
                                  snakefile=snakefile, workdir=Path(case["workdir"]),
                                  config_settings=ConfigSettings(configfiles=[Path(case["configfile"])]))
                wf.dag(DAGSettings(targets=set(case["targets"]))).execute_workflow(executor="dryrun")
        except SystemExit as exc:  # what the command line prints of it, and its status
            code = exc.code if isinstance(exc.code, int) else 1
            if not isinstance(exc.code, (int, type(None))):
                print(exc.code, file=sys.stderr)
        except BaseException:
            code = 1
            traceback.print_exc()
    print("NEUROSPEC-DRY-RUN=" + json.dumps({"returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()}))
"""


def dry_runs(cases: list[tuple[Path, Path]], env: dict | None = None,
             timeout: int = 900) -> list[subprocess.CompletedProcess]:
    """`snakemake --dry-run --configfile C` in workdir W for each (W, C) of cases, answered by ONE child
    process through Snakemake's API (importing Snakemake costs ~5-18 s a process, a parse under 1 s): the
    returncode, stdout and stderr of each as the command line has them (a config error's SystemExit message
    on stderr, status 1; any other exception's traceback on stderr; Snakemake's log, the plan and its job
    stats included, on stderr). For tests that ask many configs one question each; the command line itself
    (`snakemake`) still runs in test_workflow.py's and test_docs.py's dry runs and in CI's (.ci/run)."""
    payload = json.dumps([{"workdir": str(w), "configfile": str(c), "targets": []} for w, c in cases])
    run_env = {**clean_env(), "PYTHONPATH": str(ROOT / "workflow" / "scripts"), **(env or {})}
    proc = subprocess.run([sys.executable, "-c", _DRY_RUNS, str(SNAKEFILE)], input=payload, capture_output=True,
                          text=True, timeout=timeout, env=run_env)
    results = [json.loads(line.partition("=")[2]) for line in proc.stdout.splitlines()
               if line.startswith("NEUROSPEC-DRY-RUN=")]
    assert len(results) == len(cases), f"({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return [subprocess.CompletedProcess(["snakemake", "--dry-run", "--configfile", str(c)], r["returncode"],
                                        r["stdout"], r["stderr"]) for (_, c), r in zip(cases, results)]


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


_EFFECTIVE_CONFIGS = """
import json, os, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings
snakefile = Path(sys.argv[1])
for case in json.loads(sys.stdin.read()):
    os.chdir(case["workdir"])
    with SnakemakeApi(OutputSettings()) as api:
        wf = api.workflow(resource_settings=ResourceSettings(cores=1), snakefile=snakefile,
                          workdir=Path(case["workdir"]),
                          config_settings=ConfigSettings(configfiles=[Path(c) for c in case["configfiles"]]))
        print("NEUROSPEC-CONFIG=" + json.dumps(wf._workflow.config, sort_keys=True), flush=True)
"""


def effective_configs(cases: list[tuple[Path, list[Path]]], env: dict | None = None) -> list[dict]:
    """effective_config(workdir, *configfiles) for each (workdir, configfiles) of cases, in ONE child process
    (Snakemake's import is most of a child's time)."""
    run_env = {**os.environ, "PYTHONPATH": str(ROOT / "workflow" / "scripts"), **(env or {})}
    payload = json.dumps([{"workdir": str(w), "configfiles": [str(c) for c in cs]} for w, cs in cases])
    proc = subprocess.run([sys.executable, "-c", _EFFECTIVE_CONFIGS, str(SNAKEFILE)], input=payload,
                          capture_output=True, text=True, timeout=600, env=run_env)
    configs = [json.loads(line.partition("=")[2]) for line in proc.stdout.splitlines()
               if line.startswith("NEUROSPEC-CONFIG=")]
    assert len(configs) == len(cases), f"({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return configs


def report_entries(report_html: str) -> tuple[dict, dict]:
    """The results and categories a Snakemake HTML report embeds: {path: entry} (entry: caption,
    job_properties with the rule's wildcards, data_uri with the file), {category: {subcategory: [paths]}}."""
    decoder = json.JSONDecoder()
    start = report_html.index("var results = ", report_html.index('<script id="results">'))
    results, _ = decoder.raw_decode(report_html, start + len("var results = "))
    start = report_html.index("var categories = ")
    categories, _ = decoder.raw_decode(report_html, start + len("var categories = "))
    return results, categories
