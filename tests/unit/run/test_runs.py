"""A run's directories and library: a private workers' directory (through snakemake), each checkout's own
neurospec, stale Snakemake locks of killed runs, and a live run whose lock was removed (neurospec/run/runs.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from neurospec.run import runs, workers
from test_workers import _wait
from workflow_utils import ROOT, SNAKEFILE, clean_env, snakemake, write_config

PAIR = "results/data/demo/validation/en-de.parquet"
PAIR_LOG = "results/logs/data/demo/validation/en-de.log"
HERE = socket.gethostname()


@pytest.fixture
def short_tmp():
    """A TMPDIR of this test alone, short enough for socket paths (workers.runs_dir)."""
    base = Path(tempfile.mkdtemp(prefix="ns-", dir="/tmp"))
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ----------------------------------------------------------------------------------------------
# The workers' directory, through snakemake
# ----------------------------------------------------------------------------------------------


@pytest.mark.skipif(os.getuid() != 0, reason="only root can give a directory to another user")
def test_a_foreign_workers_directory_is_refused_through_snakemake(tmp_path, short_tmp):
    """Another user (uid 65534) created neurospec-<uid> first, open to all: the run stops with one line
    before any job, and nothing of it runs there."""
    cfg = write_config(tmp_path)
    top = short_tmp / f"neurospec-{os.getuid()}"
    top.mkdir()
    os.chmod(top, 0o777)
    os.chown(top, 65534, 65534)
    proc = snakemake(tmp_path, PAIR, configfile=cfg, check=False, env={"TMPDIR": str(short_tmp)})
    assert proc.returncode == 1
    line = (f"neurospec: error: the workers' directory {top} belongs to uid 65534, not to you (uid 0): another "
            "user could run code as you through it; remove it (or have its owner remove it), or set TMPDIR to "
            "a private directory (a path of at most 40 characters), then rerun")
    assert proc.stderr.strip().splitlines()[-1] == line and "Traceback" not in proc.stderr
    assert list(top.iterdir()) == [] and not (tmp_path / PAIR).exists() and not (tmp_path / PAIR_LOG).exists()
    assert not list((tmp_path / ".snakemake/neurospec/runs").glob("*.json"))  # the refused run left no record
    # removed, the next run makes it private and goes on
    shutil.rmtree(top)
    snakemake(tmp_path, PAIR, configfile=cfg, env={"TMPDIR": str(short_tmp)})
    assert (tmp_path / PAIR).exists() and oct(top.stat().st_mode & 0o777) == "0o700"


# ----------------------------------------------------------------------------------------------
# Each checkout runs its own library
# ----------------------------------------------------------------------------------------------


def _copy_checkout(dest: Path) -> Path:
    """Another clone of the workflow (what Snakemake reads of it), its neurospec marked by a sentinel attribute."""
    shutil.copytree(ROOT / "workflow", dest / "workflow", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "config", dest / "config")
    shutil.copytree(ROOT / "envs", dest / "envs")
    init = dest / "workflow/scripts/neurospec/__init__.py"
    init.write_text(init.read_text() + '\nSENTINEL = "the other checkout"\n')
    return init


def _run(snakefile: Path, workdir: Path, pythonpath: Path, tmpdir: Path, **env) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "--directory", str(workdir), PAIR,
           "--cores", "1", "--configfile", str(write_config(workdir))]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=600,
                          env={**clean_env(), "PYTHONPATH": str(pythonpath), "TMPDIR": str(tmpdir), **env})


def test_each_checkout_runs_its_own_library(tmp_path, short_tmp):
    """The other checkout's neurospec first on PYTHONPATH (as an installed copy would be): this checkout's
    jobs and workers still import this checkout's library, and the other checkout's run imports its own."""
    other_init = _copy_checkout(tmp_path / "other")
    own_init = ROOT / "workflow/scripts/neurospec/__init__.py"
    other_scripts = tmp_path / "other/workflow/scripts"
    probe = subprocess.run([sys.executable, "-c", "import neurospec; print(neurospec.__file__, neurospec.SENTINEL)"],
                           capture_output=True, text=True, env={**clean_env(), "PYTHONPATH": str(other_scripts)},
                           cwd=tmp_path)
    assert probe.stdout.split() == [str(other_init), "the", "other", "checkout"]  # the "installed" one wins

    cases = [("own", SNAKEFILE, other_scripts, own_init, other_init, {}),
             ("own-no-workers", SNAKEFILE, other_scripts, own_init, other_init, {"NEUROSPEC_WORKERS": "0"}),
             ("run-other", tmp_path / "other/workflow/Snakefile", ROOT / "workflow/scripts", other_init, own_init, {})]
    for name, snakefile, pythonpath, expected, wrong, env in cases:
        workdir = tmp_path / name
        workdir.mkdir()
        proc = _run(snakefile, workdir, pythonpath, short_tmp, **env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        job_log = (workdir / PAIR_LOG).read_text()
        if env:  # the task ran in the job's own process: the job's import
            assert f"neurospec library {expected} (in the job's own process)" in job_log
            assert not (workdir / "results/logs/workers").exists()
        else:
            assert f"neurospec.data.pairs:write_pair_table (neurospec library {expected}, the job's too)" in job_log
            (worker_log,) = (workdir / "results/logs/workers").glob("*.log")
            assert f"listening; neurospec library {expected}" in worker_log.read_text()
        assert str(wrong) not in job_log


# ----------------------------------------------------------------------------------------------
# Stale locks: unit
# ----------------------------------------------------------------------------------------------


def _record(host: str, pid: int, locks: list[Path]) -> Path:
    runs.RECORDS.mkdir(parents=True, exist_ok=True)
    path = runs.RECORDS / f"{host}-{pid}.json"
    path.write_text(json.dumps({"host": host, "pid": pid, "started": time.time(),
                                "locks": {str(p.resolve()): runs._digest(p) for p in locks}}))
    return path


def _lock(i: int, text: str = "results/x.parquet\n") -> Path:
    path = Path(f".snakemake/locks/{i}.output.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_only_locks_of_runs_proven_gone_are_removed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dead = _dead_pid()
    gone = _record(HERE, dead, [_lock(0)])
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(json.loads(gone.read_text())["started"]))
    assert runs.clear_stale_locks() == [f"neurospec: removed the Snakemake lock left by run pid {dead} on {HERE} "
                                        f"(started {started}), which is gone (killed?) with all its processes"]
    assert not _lock_exists(0) and not gone.exists()

    # its lock file was replaced since (another run's, same name): kept; the dead record goes
    lock = _lock(0)
    stale = _record(HERE, dead, [lock])
    lock.write_text("results/other.parquet\n")
    assert runs.clear_stale_locks() == [] and lock.exists() and not stale.exists()

    # a run on another host: nothing here can prove it gone: kept, and the one command named
    far = _record("node-elsewhere-7", dead, [lock])
    (line,) = runs.clear_stale_locks()
    assert line.startswith(f"neurospec: the lock in {tmp_path}/.snakemake/locks is from run pid {dead} on "
                           "node-elsewhere-7") and "run `snakemake --unlock` with the same options" in line
    assert lock.exists() and far.exists()
    far.unlink()

    # the run's pid is dead but a process of it lives on (a job: NEUROSPEC_RUN in its environment): kept
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                              env={**os.environ, "NEUROSPEC_RUN": f"{HERE}:{dead}"})
    try:
        assert _wait(lambda: orphan.pid in (runs.processes_of_run(f"{HERE}:{dead}") or []), timeout=10)
        held = _record(HERE, dead, [lock])
        assert runs.clear_stale_locks() == [] and lock.exists() and held.exists()
    finally:
        orphan.kill()
        orphan.wait()
    assert runs.clear_stale_locks() and not lock.exists() and not held.exists()  # now it is gone

    # a live run (its record held): kept
    live_lock = _lock(1)
    mine = runs.claim_workdir([str(live_lock)])
    try:
        assert runs.clear_stale_locks() == [] and live_lock.exists() and mine.exists()
    finally:
        runs.release_workdir()
    assert not mine.exists()


def _lock_exists(i: int) -> bool:
    return Path(f".snakemake/locks/{i}.output.lock").exists()


# ----------------------------------------------------------------------------------------------
# Through snakemake: a killed run, and a live run whose lock was removed
# ----------------------------------------------------------------------------------------------


def test_the_same_command_after_a_killed_run_goes_on(tmp_path, short_tmp):
    """SIGKILL the run while a job runs: Snakemake's lock is left behind; the same command removes it
    (one line naming the killed run), completes, and removes the killed run's workers' directory."""
    cfg = write_config(tmp_path)
    pairs = ["en-de", "de-en", "en-ru", "ru-en"]
    targets = [f"results/data/demo/validation/{p}.parquet" for p in pairs]
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(tmp_path), *targets,
           "--cores", "1", "--configfile", str(cfg)]
    env = {**clean_env(), "PYTHONPATH": str(ROOT / "workflow" / "scripts"), "TMPDIR": str(short_tmp)}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        assert _wait(lambda: any((tmp_path / "results/logs/data").rglob("*.log")) or proc.poll() is not None,
                     timeout=120, step=0.02)
        assert proc.poll() is None, "the run ended before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert list((tmp_path / ".snakemake/locks").glob("*.lock"))  # what stopped the next run before
    assert (tmp_path / f".snakemake/neurospec/runs/{HERE}-{proc.pid}.json").exists()
    killed_dir = short_tmp / f"neurospec-{os.getuid()}" / workers.run_dir_path(f"{HERE}:{proc.pid}").name
    assert killed_dir.is_dir()
    assert not all((tmp_path / t).exists() for t in targets)

    rerun = snakemake(tmp_path, *targets, configfile=cfg, env={"TMPDIR": str(short_tmp)})
    assert f"neurospec: removed the Snakemake lock left by run pid {proc.pid} on {HERE} (started " in rerun.stderr
    assert all((tmp_path / t).exists() for t in targets)
    assert not killed_dir.exists()  # the killed run's workers' directory, removed by the next run
    assert not list((tmp_path / ".snakemake/neurospec/runs").glob("*.json"))  # records end with their runs


HOLD = """
import sys, time
from pathlib import Path
from neurospec.run import runs
lock = Path(".snakemake/locks/0.output.lock")
lock.parent.mkdir(parents=True, exist_ok=True)
lock.write_text("results/elsewhere.parquet\\n")
runs.claim_workdir([str(lock)])
if sys.argv[1] == "unlock":
    lock.unlink()  # what `snakemake --unlock` does to it
print("ready", flush=True)
time.sleep(300)
"""


def test_a_run_does_not_start_while_another_live_run_lost_its_lock(tmp_path, short_tmp):
    """A live run (a stand-in holding its record) whose lock files were removed (--unlock): the next
    run stops with one line before any job, so it cannot remove that run's outputs; with its lock in
    place, or once it has ended, the next run goes on."""
    cfg = write_config(tmp_path)
    env = {**clean_env(), "PYTHONPATH": str(ROOT / "workflow" / "scripts")}
    for case in ("unlock", "locked"):
        live = subprocess.Popen([sys.executable, "-c", HOLD, case], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                text=True)
        try:
            assert live.stdout.readline().strip() == "ready"
            proc = snakemake(tmp_path, PAIR, configfile=cfg, check=False, env={"TMPDIR": str(short_tmp)})
            if case == "unlock":
                assert proc.returncode == 1
                last = proc.stderr.strip().splitlines()[-1]
                assert last.startswith(f"neurospec: error: another run of this workflow, run pid {live.pid} on "
                                       f"{HERE} (started ")
                assert last.endswith(f"is still working in {tmp_path} and its Snakemake lock is gone (snakemake "
                                     "--unlock?): this run could delete the outputs it is writing; wait until it "
                                     f"ends (or stop it: kill {live.pid}), then run again")
                assert not (tmp_path / PAIR).exists() and not (tmp_path / PAIR_LOG).exists()  # no job ran
            else:
                assert proc.returncode == 0, proc.stderr[-3000:]
                assert (tmp_path / PAIR).exists()
        finally:
            live.kill()
            live.wait()
        if case == "unlock":  # it has ended: the same command goes on
            snakemake(tmp_path, PAIR, configfile=cfg, env={"TMPDIR": str(short_tmp)})
            assert (tmp_path / PAIR).exists()
            (tmp_path / PAIR).unlink()


PARSE = """
import os, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings
with SnakemakeApi(OutputSettings()) as api:
    wf = api.workflow(resource_settings=ResourceSettings(cores=1), snakefile=Path(sys.argv[1]),
                      workdir=Path(sys.argv[2]), config_settings=ConfigSettings(configfiles=[Path(sys.argv[3])]))
    print("RULES=" + str(len(wf._workflow.rules)))  # the Snakefile read, nothing run
    print("ENV=" + ",".join(sorted(k for k in os.environ if k.startswith("NEUROSPEC"))))
"""


def test_reading_the_snakefile_leaves_the_environment_alone(tmp_path):
    """Parsing (what --lint, -n, --report and API users do) does not make the process a run: only a run's
    start (onstart) sets NEUROSPEC_RUN for its jobs."""
    cfg = write_config(tmp_path)
    proc = subprocess.run([sys.executable, "-c", PARSE, str(SNAKEFILE), str(tmp_path), str(cfg)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300,
                          env={**clean_env(), "PYTHONPATH": str(ROOT / "workflow" / "scripts")})
    lines = dict(ln.split("=", 1) for ln in proc.stdout.splitlines() if "=" in ln)
    assert int(lines.get("RULES", 0)) > 10, proc.stderr[-3000:]
    assert lines["ENV"] == ""
    assert not (tmp_path / ".snakemake/neurospec").exists()


def test_unlock_during_a_live_run_then_a_second_run_is_refused(tmp_path, short_tmp):
    """The real sequence: a run collecting, `snakemake --unlock` beside it, the same command again: the
    second run stops with one line before any job; the first completes with its model directory."""
    cfg = write_config(tmp_path)
    results = "results/demo-small/demo/validation"
    targets = [f"{results}/activations/{p}.parquet" for p in ("en-de", "de-en", "en-ru", "ru-en", "en-hi", "hi-en")]
    targets += [f"{results}/scores/{m}.parquet" for m in ("frequency", "lape", "contrast", "diffmeans")]
    env = {**clean_env(), "PYTHONPATH": str(ROOT / "workflow" / "scripts"), "TMPDIR": str(short_tmp)}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(tmp_path), *targets,
           "--cores", "1", "--resources", "gpu=1", "--configfile", str(cfg)]
    first = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # the first run builds the model (the moment a second run used to delete it under its feet)
        assert _wait(lambda: first.poll() is not None or (tmp_path / "results/logs/models/demo.log").exists(),
                     timeout=600, step=0.05)
        assert first.poll() is None, "the first run ended before the test could unlock it"
        # Pause the first run's scheduler (its running job goes on) so that it cannot finish every target
        # while the unlock and the second run start (on an idle machine it did, and the second run found
        # nothing to do). A stopped process is still alive and holds its run record: the case under test.
        os.kill(first.pid, signal.SIGSTOP)
        try:
            snakemake(tmp_path, "--unlock", configfile=cfg, env={"TMPDIR": str(short_tmp)})
            assert not list((tmp_path / ".snakemake/locks").glob("*.lock"))
            second = snakemake(tmp_path, *targets, configfile=cfg, check=False, env={"TMPDIR": str(short_tmp)})
        finally:
            os.kill(first.pid, signal.SIGCONT)
        assert second.returncode == 1
        assert second.stderr.strip().splitlines()[-1].startswith(
            f"neurospec: error: another run of this workflow, run pid {first.pid} on {HERE} (started ")
        assert "Select jobs to execute" not in second.stdout + second.stderr  # no job of it ran
        out, _ = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, out[-3000:]
    assert all((tmp_path / t).exists() for t in targets)
    assert (tmp_path / "results/models/demo/config.json").exists()
