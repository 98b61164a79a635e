"""Persistent workers: one model load for many jobs, clean failures, cancellation, lifetime, devices.

The test process plays the Snakemake run (``NEUROSPEC_RUN`` names its pid); "jobs" are calls of
``run_task``/``run_model_task`` in this process or in subprocesses, as rule scripts make them. The
tasks are in tests/worker_tasks.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from neurospec.run import protocol, workers
from neurospec.run.workers import run_model_task, run_task, shutdown_run

ROOT = Path(__file__).resolve().parents[3]
PYTHONPATH = os.pathsep.join([str(ROOT / "workflow" / "scripts"), str(ROOT / "tests")])
# the tests' own tasks (tests/worker_tasks.py), allowed besides the registered ones (workers.TASKS)
EXTRA_TASKS = ",".join(f"worker_tasks:{name}" for name in ("whoami", "model_info", "slow_write", "fail", "bug",
                                                            "crash"))

# A job in its own process: run one task, as a rule script does.
JOB = """
import json, sys
from neurospec.run.workers import run_model_task, run_task
spec = json.loads(sys.argv[1])
if spec.pop("model"):
    run_model_task(spec.pop("target"), model=json.loads(sys.argv[2]), **spec)
else:
    run_task(spec.pop("target"), **spec)
"""


def _pid_alive(pid: int) -> bool:
    return workers.pid_alive(pid)  # zombie-aware: workers started from this process are its children


def _wait(condition, timeout: float = 20.0, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


@pytest.fixture
def run(tmp_path, monkeypatch):
    """This test process is the run; workers live in tmp_path (their cwd) and end with the test."""
    run_id = f"{socket.gethostname()}:{os.getpid()}"
    monkeypatch.setenv(workers.RUN_ENV, run_id)
    monkeypatch.setenv("PYTHONPATH", PYTHONPATH)
    monkeypatch.setenv(workers.EXTRA_TASKS_ENV, EXTRA_TASKS)
    monkeypatch.delenv(workers.MODE_ENV, raising=False)
    monkeypatch.delenv(workers.IDLE_ENV, raising=False)
    for var in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", "SLURM_JOB_GPUS", "NEUROSPEC_FAKE_GPUS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NEUROSPEC_GPU_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    shutdown_run(run_id)


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def _worker_logs(workdir: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in (workdir / "results/logs/workers").glob("*.log")}


def _model(small_model_dir, device="cpu") -> dict:
    return {"model_id": str(small_model_dir), "revision": "main", "dtype": "float32", "device": device,
            "attn_implementation": "auto"}


def _job(workdir: Path, spec: dict, model: dict | None = None, env: dict | None = None) -> subprocess.Popen:
    spec = {**spec, "model": model is not None}
    return subprocess.Popen([sys.executable, "-c", JOB, json.dumps(spec), json.dumps(model)], cwd=workdir,
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_cpu_tasks_share_one_warm_worker(run):
    for i in range(3):
        run_task("worker_tasks:whoami", log=str(run / f"job{i}.log"), path=str(run / f"out{i}.json"))
    pids = {_read(run / f"out{i}.json")["pid"] for i in range(3)}
    assert len(pids) == 1 and os.getpid() not in pids  # one worker, not this process
    assert "whoami task in pid" in (run / "job2.log").read_text()  # the job's log gets the task's lines
    logs = _worker_logs(run)
    assert len(logs) == 1 and next(iter(logs.values())).count("task done") == 3
    from neurospec.tools.bench_e2e import _task_seconds

    seconds = _task_seconds(run)  # the end-to-end benchmark reads these logs: the task names stay parseable
    assert list(seconds) == ["worker_tasks:whoami"] and len(seconds["worker_tasks:whoami"]) == 3


def test_the_model_is_loaded_once_for_many_jobs(run, small_model_dir):
    model = _model(small_model_dir)
    for i in range(3):
        run_model_task("worker_tasks:model_info", model=model, log=str(run / f"job{i}.log"),
                       path=str(run / f"out{i}.json"))
    # and the same from jobs in processes of their own, as Snakemake starts them
    jobs = [_job(run, {"target": "worker_tasks:model_info", "log": str(run / f"sub{i}.log"),
                       "path": str(run / f"sub{i}.json")}, model) for i in range(2)]
    for j in jobs:
        out, err = j.communicate(timeout=120)
        assert j.returncode == 0, err
    served = [_read(run / f"out{i}.json") for i in range(3)] + [_read(run / f"sub{i}.json") for i in range(2)]
    assert len({s["pid"] for s in served}) == 1 and len({s["model_object"] for s in served}) == 1
    assert served[0]["n_layers"] == 3
    (log_text,) = [t for name, t in _worker_logs(run).items() if "-model-" in name]
    assert log_text.count("loading model") == 1 and log_text.count("task done") == 5
    assert "already loaded by worker pid" in (run / "job2.log").read_text()


def test_a_model_worker_started_early_serves_the_first_model_job(run, small_model_dir):
    """Started as the run starts (onstart), the worker imports torch before any task; the first model
    job finds it (no second worker, one model load); starting it again starts nothing."""
    model = _model(small_model_dir)
    assert workers.start_model_worker_early(model) is True
    (pidfile,) = workers.run_dir().glob("model-*.pid")
    early_pid = int(pidfile.read_text())
    assert workers.start_model_worker_early(model) is False  # it runs already
    run_model_task("worker_tasks:model_info", model=model, path=str(run / "a.json"))
    assert _read(run / "a.json")["pid"] == early_pid
    (text,) = [t for name, t in _worker_logs(run).items() if "-model-" in name]
    assert "started with the run: torch and transformers imported" in text
    assert text.index("started with the run") < text.index("task 1 of") and text.count("loading model") == 1


def test_an_early_start_never_waits_for_a_busy_gpu(run, monkeypatch, small_model_dir):
    from neurospec.devices import lock_path, try_lock

    monkeypatch.setenv("NEUROSPEC_FAKE_GPUS", "1")
    other = try_lock(lock_path(0))  # another run holds the only GPU
    try:
        t0 = time.monotonic()
        assert workers.start_model_worker_early(_model(small_model_dir, "auto")) is False
        assert time.monotonic() - t0 < 5 and not list(workers.run_dir().glob("*.pid"))
    finally:
        other.close()
    monkeypatch.setenv(workers.MODE_ENV, "0")
    assert workers.start_model_worker_early(_model(small_model_dir, "auto")) is False  # workers off


def test_a_task_that_uses_torch_goes_to_an_idle_model_worker(run, small_model_dir):
    """uses_torch (building the demo model): an idle model worker of the run serves it (torch is imported
    there); without one, a CPU worker; other CPU tasks always go to CPU workers."""
    run_task("worker_tasks:whoami", uses_torch=True, path=str(run / "a.json"))
    cpu_pid = _read(run / "a.json")["pid"]
    run_model_task("worker_tasks:model_info", model=_model(small_model_dir), path=str(run / "m.json"))
    model_pid = _read(run / "m.json")["pid"]
    assert cpu_pid != model_pid
    run_task("worker_tasks:whoami", uses_torch=True, path=str(run / "b.json"))
    run_task("worker_tasks:whoami", path=str(run / "c.json"))
    assert _read(run / "b.json")["pid"] == model_pid and _read(run / "c.json")["pid"] == cpu_pid
    # while the model worker serves a model job, a torch task does not wait for it
    job = _job(run, {"target": "worker_tasks:model_info", "path": str(run / "long.json"), "hold_s": 4.0},
               _model(small_model_dir))
    assert _wait(lambda: _busy(run))
    run_task("worker_tasks:whoami", uses_torch=True, path=str(run / "d.json"))
    assert _read(run / "d.json")["pid"] == cpu_pid and not (run / "long.json").exists()
    job.communicate(timeout=60)
    assert job.returncode == 0


def _busy(run) -> bool:
    """Whether a model worker of the run is held by a job."""
    import fcntl

    for busy in workers.run_dir().glob("model-*.busy"):
        with open(busy, "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
    return False


def test_bad_input_is_one_line_in_the_job_log_and_on_stderr(run, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_task("worker_tasks:fail", log=str(run / "job.log"), message="dataset file x.en is missing")
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert [ln for ln in err.splitlines() if ln.strip()] == ["neurospec: error: dataset file x.en is missing"]
    assert "neurospec: error: dataset file x.en is missing" in (run / "job.log").read_text()


def test_a_bug_keeps_its_traceback(run, capsys):
    with pytest.raises(SystemExit):
        run_task("worker_tasks:bug", log=str(run / "job.log"))
    err = capsys.readouterr().err
    assert "Traceback" in err and "ValueError: a bug in a task" in err
    assert "unexpected error (a bug" in (run / "job.log").read_text()
    run_task("worker_tasks:whoami", path=str(run / "after.json"))  # the worker goes on


def test_a_crashed_worker_fails_its_job_with_one_line_and_the_next_job_gets_a_fresh_one(run, capsys):
    run_task("worker_tasks:whoami", path=str(run / "before.json"))
    with pytest.raises(SystemExit):
        run_task("worker_tasks:crash", log=str(run / "job.log"))
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("neurospec: error: the worker cpu-") and "died while serving" in err[0]
    assert "about to crash" in err[0]  # its last log line says what it was doing
    assert "died while serving this job" in (run / "job.log").read_text()
    run_task("worker_tasks:whoami", path=str(run / "after.json"))
    assert _read(run / "after.json")["pid"] != _read(run / "before.json")["pid"]


def test_a_killed_job_cancels_its_task_and_leaves_nothing(run):
    target = run / "out" / "table.txt"
    job = _job(run, {"target": "worker_tasks:slow_write", "log": str(run / "job.log"), "path": str(target),
                     "seconds": 30})
    assert _wait(lambda: (run / "job.log").exists() and "slow_write started" in (run / "job.log").read_text())
    job.kill()
    job.wait()
    assert _wait(lambda: any("task cancelled" in t for t in _worker_logs(run).values()), timeout=10)
    assert not target.exists() and not list(target.parent.glob(".*.part"))
    run_task("worker_tasks:whoami", path=str(run / "after.json"))  # the same worker serves the next job
    (text,) = _worker_logs(run).values()
    assert text.count("listening") == 1


def test_workers_end_with_their_run(tmp_path, small_model_dir):
    """A killed run (SIGKILL: no handler runs) leaves no worker behind, model workers included."""
    fake_run = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        env = {workers.RUN_ENV: f"{socket.gethostname()}:{fake_run.pid}", "PYTHONPATH": PYTHONPATH,
               workers.EXTRA_TASKS_ENV: EXTRA_TASKS}
        for i, model in enumerate((None, _model(small_model_dir))):
            target = "worker_tasks:model_info" if model else "worker_tasks:whoami"
            job = _job(tmp_path, {"target": target, "path": str(tmp_path / f"{i}.json")}, model, env)
            out, err = job.communicate(timeout=120)
            assert job.returncode == 0, err
        pids = [_read(tmp_path / f"{i}.json")["pid"] for i in range(2)]
        assert all(_pid_alive(p) for p in pids)
        fake_run.kill()
        fake_run.wait()
        assert _wait(lambda: not any(_pid_alive(p) for p in pids), timeout=5)
    finally:
        fake_run.kill()


def test_idle_workers_exit_and_the_end_of_the_run_ends_the_rest(run, monkeypatch):
    monkeypatch.setenv(workers.IDLE_ENV, "0.5")
    run_task("worker_tasks:whoami", path=str(run / "a.json"))
    pid = _read(run / "a.json")["pid"]
    assert _wait(lambda: not _pid_alive(pid), timeout=5)
    monkeypatch.setenv(workers.IDLE_ENV, "600")
    run_task("worker_tasks:whoami", path=str(run / "b.json"))
    pid = _read(run / "b.json")["pid"]
    directory = workers.run_dir()
    shutdown_run()
    assert not _pid_alive(pid) and not directory.exists()


def test_without_workers_the_task_runs_in_the_job(run, monkeypatch, small_model_dir):
    monkeypatch.setenv(workers.MODE_ENV, "0")
    run_task("worker_tasks:whoami", path=str(run / "a.json"))
    run_model_task("worker_tasks:model_info", model=_model(small_model_dir), path=str(run / "b.json"))
    assert _read(run / "a.json")["pid"] == _read(run / "b.json")["pid"] == os.getpid()
    assert not (run / "results/logs/workers").exists()


def test_jobs_spread_over_gpus_and_wait_when_all_are_busy(run, monkeypatch, small_model_dir):
    """Three (fake) GPUs, four concurrent jobs: three workers, one per GPU; the fourth job waits."""
    monkeypatch.setenv("NEUROSPEC_FAKE_GPUS", "3")
    model = _model(small_model_dir, device="auto")
    jobs = [_job(run, {"target": "worker_tasks:model_info", "path": str(run / f"{i}.json"), "hold_s": 3.0}, model)
            for i in range(4)]
    errs = []
    for j in jobs:
        _, err = j.communicate(timeout=180)
        assert j.returncode == 0, err
        errs.append(err)
    served = [_read(run / f"{i}.json") for i in range(4)]
    assert sorted({s["device"] for s in served}) == ["cuda:0", "cuda:1", "cuda:2"]
    assert len({s["pid"] for s in served}) == 3  # one worker (one model load) per GPU
    assert sum("waiting for one" in e for e in errs) == 1  # the fourth waited, never shared a GPU
    logs = _worker_logs(run)
    assert sum(t.count("loading model") for t in logs.values()) == 3


def test_a_gpu_held_by_another_run_is_left_alone(run, monkeypatch, small_model_dir):
    from neurospec.devices import lock_path, try_lock

    monkeypatch.setenv("NEUROSPEC_FAKE_GPUS", "2")
    other = try_lock(lock_path(0))  # another run's worker holds GPU 0
    try:
        run_model_task("worker_tasks:model_info", model=_model(small_model_dir, "auto"), path=str(run / "a.json"))
        served = _read(run / "a.json")
        assert served["device"] == "cuda:1"
        # the worker holds GPU 1's lock for its life: the lock file names its pid, and it is taken
        assert lock_path(1).read_text().strip() == str(os.getpid()) or try_lock(lock_path(1)) is None
        assert try_lock(lock_path(1)) is None
    finally:
        other.close()
    shutdown_run()
    assert _wait(lambda: try_lock(lock_path(1)) is not None, timeout=5)  # released with the worker


def test_two_models_of_one_run_share_its_gpu_each_loaded_once(run, monkeypatch, capsys, small_model_dir):
    """models: one (fake) GPU, jobs of two models in turn: the second model's worker shares the GPU
    that the first's holds (no waiting for it to exit), each model is loaded once, and each job is
    served by its own model's worker; while one of them computes, the other's job waits."""
    from neurospec.devices import lock_path, try_lock

    monkeypatch.setenv("NEUROSPEC_FAKE_GPUS", "1")
    models = {"a": _model(small_model_dir, "auto"), "b": {**_model(small_model_dir, "auto"), "dtype": "float64"}}
    for i, name in enumerate("abab"):
        run_model_task("worker_tasks:model_info", model=models[name], path=str(run / f"{i}{name}.json"))
    served = {f.name: _read(f) for f in run.glob("*.json")}
    assert {s["device"] for s in served.values()} == {"cuda:0"}
    assert served["0a.json"]["pid"] == served["2a.json"]["pid"] != served["1b.json"]["pid"] == served["3b.json"]["pid"]
    assert "waiting" not in capsys.readouterr().err
    logs = _worker_logs(run)
    assert sorted(t.count("loading model") for t in logs.values()) == [1, 1]
    assert try_lock(lock_path(0)) is None  # the first model's worker holds the GPU's lock
    # a job of b while a's worker computes: it waits for a's task, then runs in b's worker
    slow = _job(run, {"target": "worker_tasks:model_info", "path": str(run / "slow.json"), "hold_s": 3.0},
                models["a"])
    started = lambda: "".join(_worker_logs(run).values()).count("model_info task started")  # noqa: E731
    assert _wait(lambda: started() == 5, timeout=30)  # the slow task runs in a's worker
    t0 = time.monotonic()
    run_model_task("worker_tasks:model_info", model=models["b"], path=str(run / "after.json"))
    assert slow.wait(timeout=60) == 0
    assert (run / "slow.json").stat().st_mtime <= (run / "after.json").stat().st_mtime
    assert _read(run / "after.json")["pid"] == served["1b.json"]["pid"] and time.monotonic() - t0 > 0.5


def test_the_gpu_lock_holder_stays_while_another_models_worker_computes(run, monkeypatch, small_model_dir):
    """models: the first model's worker holds the GPU's lock, the second's shares the GPU without it.
    When the holder is idle past its limit while the other computes, it stays (else the lock would be
    free and another run could take the GPU); once the other has exited too, the lock is released."""
    from neurospec.devices import lock_path, try_lock

    monkeypatch.setenv("NEUROSPEC_FAKE_GPUS", "1")
    monkeypatch.setenv(workers.IDLE_ENV, "1")  # 1 s idle and a worker exits
    models = {"a": _model(small_model_dir, "auto"), "b": {**_model(small_model_dir, "auto"), "dtype": "float64"}}
    run_model_task("worker_tasks:model_info", model=models["a"], path=str(run / "a.json"))
    holder = _read(run / "a.json")["pid"]
    slow = _job(run, {"target": "worker_tasks:model_info", "path": str(run / "b.json"), "hold_s": 6.0}, models["b"])
    assert _wait(lambda: "".join(_worker_logs(run).values()).count("model_info task started") == 2, timeout=60)
    time.sleep(3.0)  # a's worker: idle for 3 s (> 1 s) while b's computes
    assert _pid_alive(holder) and try_lock(lock_path(0)) is None
    assert slow.wait(timeout=60) == 0 and _read(run / "b.json")["pid"] != holder
    assert _wait(lambda: not _pid_alive(holder), timeout=30)  # b's worker exits idle, then a's
    fh = try_lock(lock_path(0))
    assert fh is not None
    fh.close()


def test_a_model_that_cannot_load_is_one_line(run, capsys, tmp_path):
    bad = {"model_id": str(tmp_path / "no-such-model"), "revision": "main", "dtype": "float32", "device": "cpu",
           "attn_implementation": "auto"}
    with pytest.raises(SystemExit):
        run_model_task("worker_tasks:model_info", model=bad, log=str(run / "job.log"), path=str(run / "x.json"))
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert err == [f"neurospec: error: model.id {bad['model_id']!r}: no such directory"]


def test_sigterm_of_a_worker_is_a_clear_failure_of_its_job(run, small_model_dir):
    job = _job(run, {"target": "worker_tasks:model_info", "log": str(run / "job.log"), "path": str(run / "x.json"),
                     "hold_s": 30}, _model(small_model_dir))
    assert _wait(lambda: (run / "job.log").exists() and "model_info task started" in (run / "job.log").read_text(),
                 timeout=120)
    pid = int(next(workers.run_dir().glob("model-*.pid")).read_text())
    os.kill(pid, signal.SIGTERM)
    _, err = job.communicate(timeout=30)
    assert job.returncode == 1
    assert "neurospec: error: the worker model-" in err and "died while serving this job" in err


def test_which_snakemake_process_a_run_belongs_to(monkeypatch):
    """A job's own Snakemake (srun inside a SLURM job) keeps its SLURM job's run; anything else starts one."""
    here = socket.gethostname()
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for var in (workers.RUN_ENV, workers.RUN_SCOPE_ENV, "SLURM_JOB_ID"):
            monkeypatch.setenv(var, "")  # so that monkeypatch restores the variables' absence afterwards
            monkeypatch.delenv(var)
        workers.enter_run()  # a local run: this process
        assert os.environ[workers.RUN_ENV] == f"{here}:{os.getpid()}"

        # inside SLURM job 7, under the Snakemake process of that job (alive, same host): kept
        monkeypatch.setenv("SLURM_JOB_ID", "7")
        monkeypatch.setenv(workers.RUN_ENV, f"{here}:{parent.pid}")
        monkeypatch.setenv(workers.RUN_SCOPE_ENV, "7")
        workers.enter_run()
        assert os.environ[workers.RUN_ENV] == f"{here}:{parent.pid}"

        # the submitting Snakemake's value, exported into SLURM job 8: a run of its own
        monkeypatch.setenv("SLURM_JOB_ID", "8")
        monkeypatch.setenv(workers.RUN_ENV, f"{here}:{parent.pid}")
        monkeypatch.setenv(workers.RUN_SCOPE_ENV, "")
        workers.enter_run()
        assert os.environ[workers.RUN_ENV] == f"{here}:{os.getpid()}"
        assert os.environ[workers.RUN_SCOPE_ENV] == "8"

        # another host's process, or a dead one: a run of its own
        for value in (f"login-node-1:{parent.pid}", f"{here}:999999999"):
            monkeypatch.setenv(workers.RUN_ENV, value)
            monkeypatch.setenv(workers.RUN_SCOPE_ENV, "8")
            workers.enter_run()
            assert os.environ[workers.RUN_ENV] == f"{here}:{os.getpid()}"
    finally:
        parent.kill()
        parent.wait()


# ----------------------------------------------------------------------------------------------
# Who may use a worker: the run's private directory, its token, the registered tasks
# ----------------------------------------------------------------------------------------------


def _raw_request(directory: Path, request: dict) -> dict:
    """Send one request to the run's CPU worker as any process could (no job, no busy lock)."""
    (sock,) = directory.glob("cpu-*.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(sock))
    try:
        protocol.send(s, protocol.encode(request))
        return protocol.receive(s)
    finally:
        s.close()


def test_a_request_without_the_run_token_is_refused(run):
    run_task("worker_tasks:whoami", path=str(run / "a.json"))  # the run's worker is up
    directory = workers.run_dir()
    token = (directory / "token").read_text().strip()
    assert len(token) == 64 and oct((directory / "token").stat().st_mode & 0o777) == "0o600"
    base = {"op": "task", "target": "worker_tasks:whoami", "model": None, "log": None, "cwd": str(run),
            "library": workers.library()}
    for bad in ({}, {"token": ""}, {"token": "0" * 64}, {"token": token[:-1]}, {"token": 12}):
        reply = _raw_request(directory, {**base, **bad, "kwargs": {"path": str(run / "stolen.json")}})
        assert reply["status"] == "error" and "refused a request without this run's token" in reply["message"]
    shutdown = _raw_request(directory, {"op": "shutdown"})
    assert shutdown["status"] == "error"
    assert not (run / "stolen.json").exists()
    (text,) = _worker_logs(run).values()
    assert text.count("WARNING refused a request: ") == 6
    # the same request with the token runs: the refusals were the token's doing, and the worker lives on
    reply = _raw_request(directory, {**base, "token": token, "kwargs": {"path": str(run / "own.json")}})
    assert reply == {"status": "ok"} and _read(run / "own.json")["pid"] == _read(run / "a.json")["pid"]


def test_only_registered_tasks_run(run, capsys, monkeypatch):
    run_task("worker_tasks:whoami", path=str(run / "a.json"))
    directory = workers.run_dir()
    token = (directory / "token").read_text().strip()
    marker = run / "pwned"
    for target in ("os:system", "subprocess:call", "neurospec.run.workers:main", "worker_tasks:nothere"):
        reply = _raw_request(directory, {"op": "task", "target": target, "model": None, "log": None,
                                         "cwd": str(run), "library": workers.library(), "token": token,
                                         "kwargs": {"command": f"touch {marker}"}})
        assert reply == {"status": "error", "message": f"worker {next(directory.glob('cpu-*.sock')).stem} "
                         f"refused task {target!r}: it is not one of neurospec's registered tasks "
                         "(neurospec.run.workers.TASKS)"}
    assert not marker.exists()
    # a job asking for one: one line, exit 1, nothing sent
    with pytest.raises(SystemExit) as exit_info:
        run_task("os:system", log=str(run / "job.log"), command=f"touch {marker}")
    assert exit_info.value.code == 1 and not marker.exists()
    assert [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()] == [
        "neurospec: error: task 'os:system' refused: it is not one of neurospec's registered tasks "
        "(neurospec.run.workers.TASKS)"]
    # the tests' tasks are allowed only through NEUROSPEC_EXTRA_TASKS
    monkeypatch.delenv(workers.EXTRA_TASKS_ENV)
    with pytest.raises(SystemExit):
        run_task("worker_tasks:whoami", path=str(run / "b.json"))
    assert not (run / "b.json").exists()


def test_the_registry_is_what_the_rule_scripts_call():
    """Every task named in workflow/scripts and the rules is registered and is a function; nothing else is."""
    import importlib
    import re

    texts = [p.read_text() for p in (ROOT / "workflow" / "scripts").glob("*.py")]
    texts += [p.read_text() for p in (ROOT / "workflow" / "rules").glob("*.smk")]
    called = {m for t in texts for m in re.findall(r'"(neurospec(?:\.[a-z_0-9]+)+:[a-z_0-9]+)"', t)}
    assert called == set(workers.TASKS) and len(called) >= 20  # 17 before steering, browser, compare
    for target in sorted(called):
        module, _, name = target.partition(":")
        assert callable(getattr(importlib.import_module(module), name)), target


@pytest.fixture
def short_tmp(monkeypatch):
    """A TMPDIR short enough for socket paths (workers.runs_dir), of this test alone."""
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="ns-", dir="/tmp"))
    monkeypatch.setenv("TMPDIR", str(base))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_the_run_directory_is_private_or_refused(short_tmp):
    """Created 0700 with its parent; a parent or run directory that is another user's, open to others
    or a symlink is refused with one line naming it, and nothing is written into it."""
    import shutil

    from neurospec.errors import NeurospecError

    run_id = f"{socket.gethostname()}:{os.getpid()}"
    top = short_tmp / f"neurospec-{os.getuid()}"
    d = workers.run_dir(run_id)
    assert d.parent == top
    assert oct(top.stat().st_mode & 0o777) == oct(d.stat().st_mode & 0o777) == "0o700"
    cases = [("open", "is open to other users (mode 0777, must be 0700)"), ("symlink", "is a symbolic link")]
    if os.getuid() == 0:  # only root can give a directory to another user
        cases.append(("foreign", f"belongs to uid 65534, not to you (uid {os.getuid()})"))
    elsewhere = short_tmp / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    for how, problem in cases:
        for victim in (top, top / d.name):  # the parent, or the run's own directory
            shutil.rmtree(top)
            if victim != top:
                top.mkdir(mode=0o700)
            if how == "symlink":
                victim.symlink_to(elsewhere)
            else:
                victim.mkdir()
                os.chmod(victim, 0o777)
                if how == "foreign":
                    os.chown(victim, 65534, 65534)
            with pytest.raises(NeurospecError) as err:
                workers.run_dir(run_id)
            assert str(err.value) == (f"the workers' directory {victim} {problem}: another user could run code "
                                      "as you through it; remove it (or have its owner remove it), or set TMPDIR "
                                      "to a private directory (a path of at most 40 characters), then rerun")
            assert not list(elsewhere.iterdir()) and not (victim / "token").exists()
            if top.is_symlink():
                top.unlink()
                top.mkdir()


def test_the_directories_of_dead_runs_are_removed_by_the_next_run(short_tmp):
    here = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dirs = {name: workers.run_dir(run) for name, run in
                (("alive", f"{here}:{alive.pid}"), ("other host", f"node-elsewhere-1:{dead.pid}"),
                 ("dead", f"{here}:{dead.pid}"))}  # (each new one cleans up: the dead one last)
        assert all(d.is_dir() for d in dirs.values())
        mine = workers.run_dir(f"{here}:{os.getpid()}")  # a new run: it cleans up
        assert not dirs["dead"].exists() and dirs["alive"].is_dir() and dirs["other host"].is_dir()
        assert mine.is_dir()
    finally:
        alive.kill()
        alive.wait()


def test_a_worker_that_exits_idle_as_the_job_connects_is_replaced_once(monkeypatch, tmp_path):
    """A CPU worker whose idle time ran out just as a job connected never read the task (its last log
    line is the idle exit): the job starts a fresh worker and sends the task again, once; a second
    such exit, or any other death, is the one-line error."""
    from contextlib import contextmanager

    calls = []

    class Fake:
        sock = tmp_path / "run" / "w.sock"

        def __init__(self, outcomes):
            self.outcomes = outcomes

        def call(self, payload):
            calls.append(json.loads(payload)["target"])
            outcome = self.outcomes.pop(0)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome

    def run_with(outcomes):
        calls.clear()
        fake = Fake(list(outcomes))

        @contextmanager
        def acquire(model, uses_torch=False, early=False):
            yield fake

        monkeypatch.setattr(workers, "acquire", acquire)
        monkeypatch.setattr(workers, "run_token", lambda directory: "t" * 64)
        monkeypatch.setenv(workers.RUN_ENV, f"{socket.gethostname()}:{os.getpid()}")
        monkeypatch.setenv(workers.MODE_ENV, "1")
        run_task("neurospec.score.scoring:run_scoring", log=str(tmp_path / "job.log"))

    gone = workers.WorkerGone("the worker cpu-x (pid 1) exited idle as this job connected")
    run_with([gone, {"status": "ok"}])
    assert calls == ["neurospec.score.scoring:run_scoring"] * 2  # sent again to a fresh worker, once
    with pytest.raises(SystemExit):
        run_with([gone, gone])
    assert len(calls) == 2 and "exited idle as this job connected" in (tmp_path / "job.log").read_text()
    with pytest.raises(SystemExit):
        run_with([workers.WorkerError("died while serving this job"), {"status": "ok"}])
    assert len(calls) == 1  # any other death is not retried: the task may have run


def test_an_idle_exit_in_the_log_makes_the_call_a_worker_gone(tmp_path):
    """``call`` tells an idle exit (nothing ran) from a death while serving, by the worker's last log line."""
    import threading

    client = workers.Worker(tmp_path, "cpu-x")
    client.log_path = tmp_path / "w.log"
    for last, kind in (("16:34:13.503 INFO idle for 60 s: exiting", workers.WorkerGone),
                       ("16:34:13.503 INFO task 3 of cpu worker cpu-x (pid 1): x", workers.WorkerError)):
        client.log_path.write_text(last + "\n")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(client.sock))
        server.listen(1)

        def accept_and_close():
            conn, _ = server.accept()
            conn.close()  # the worker is gone without an answer

        t = threading.Thread(target=accept_and_close)
        t.start()
        with pytest.raises(workers.WorkerError) as exc:
            client.call(b"{}")
        t.join()
        server.close()
        assert type(exc.value) is kind, exc.value
        assert not client.sock.exists()  # discarded: the next job starts a fresh worker
