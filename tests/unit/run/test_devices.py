"""claim_device: one GPU per job on a machine with several, by flock'ed lock files.

Devices are faked (``NEUROSPEC_FAKE_GPUS``), locks go to a tmp dir (``NEUROSPEC_GPU_LOCK_DIR``);
each "job" is a separate Python process, as Snakemake's jobs are.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from neurospec import devices
from neurospec.devices import claim_device

ROOT = Path(__file__).resolve().parents[3]

# A job: claim, print the device, hold it until a line arrives on stdin, release.
HOLDER = textwrap.dedent("""
    import logging, sys
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    from neurospec.devices import claim_device
    with claim_device(sys.argv[1]) as dev:
        print(dev, flush=True)
        sys.stdin.readline()
""")

# A busy job: claim/release in a loop, recording (device, start, end) on the shared monotonic clock.
LOOPER = textwrap.dedent("""
    import json, sys, time
    from neurospec.devices import claim_device
    deadline = time.monotonic() + float(sys.argv[1])
    spans = []
    while time.monotonic() < deadline:
        with claim_device("auto") as dev:
            start = time.monotonic()
            time.sleep(0.002)
            spans.append((dev, start, time.monotonic()))
    print(json.dumps(spans))
""")


@pytest.fixture
def fake_gpus(tmp_path, monkeypatch):
    """Three fake GPUs, a private lock dir, and no scheduler in the environment."""
    lock_dir = tmp_path / "locks"
    for var in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "SLURM_JOB_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NEUROSPEC_FAKE_GPUS", "3")
    monkeypatch.setenv("NEUROSPEC_GPU_LOCK_DIR", str(lock_dir))
    return lock_dir


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "workflow" / "scripts")}


class Job:
    """A holder process; ``device`` is what it claimed."""

    def __init__(self, device: str = "auto"):
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, device], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
        self.device = self.proc.stdout.readline().strip()
        assert self.device, self.proc.stderr.read()

    def release(self) -> str:
        """Let it finish; return its stderr (the log)."""
        _, err = self.proc.communicate("\n", timeout=30)
        assert self.proc.returncode == 0, err
        return err

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc.stdin.close()
        self.proc.stdout.close()
        self.proc.stderr.close()


def test_three_jobs_get_three_devices_and_a_fourth_waits_for_one(fake_gpus):
    jobs = [Job() for _ in range(3)]
    try:
        assert sorted(j.device for j in jobs) == ["cuda:0", "cuda:1", "cuda:2"]
        fourth = subprocess.Popen([sys.executable, "-c", HOLDER, "auto"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
        time.sleep(2.0)
        assert fourth.poll() is None  # still waiting: it never shares a GPU
        freed = next(j for j in jobs if j.device == "cuda:1")
        freed.release()  # a job that ends releases its device: the waiting job gets it
        jobs.remove(freed)
        assert fourth.stdout.readline().strip() == "cuda:1"
        _, err = fourth.communicate("\n", timeout=30)
        assert "all 3 GPUs are held by other jobs; waiting for one to be free" in err
        assert "claimed GPU 1 of 3" in err
    finally:
        for j in jobs:
            j.release()
    assert sorted(p.name for p in fake_gpus.iterdir()) == ["gpu0.lock", "gpu1.lock", "gpu2.lock"]


def test_concurrent_jobs_never_share_a_device(fake_gpus):
    """Three jobs claiming and releasing as fast as they can: no two ever hold one device at once."""
    procs = [subprocess.Popen([sys.executable, "-c", LOOPER, "3"], stdout=subprocess.PIPE, text=True,
                              env=_env()) for _ in range(3)]
    spans = []
    for p in procs:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0
        spans += json.loads(out)
    assert len(spans) > 300, len(spans)  # they really did overlap in time
    by_device: dict[str, list[tuple[float, float]]] = {}
    for dev, start, end in spans:
        by_device.setdefault(dev, []).append((start, end))
    assert set(by_device) <= {"cuda:0", "cuda:1", "cuda:2"}
    for dev, intervals in by_device.items():
        intervals.sort()
        for (_, end), (start, _) in zip(intervals, intervals[1:]):
            assert start >= end, f"{dev} was held by two jobs at once"
    # a 4th device name would have meant the fallback; and more than one device was used
    assert len(by_device) >= 2


def test_the_lock_of_a_killed_job_is_released(fake_gpus):
    first, second = Job(), Job()
    assert (first.device, second.device) == ("cuda:0", "cuda:1")
    first.kill()  # SIGKILL: no finally runs; the kernel drops the flock with the process
    try:
        third = Job()
        assert third.device == "cuda:0"
        third.release()
    finally:
        second.release()


def test_an_exception_in_the_job_releases_the_device(fake_gpus):
    with pytest.raises(RuntimeError):
        with claim_device("auto") as dev:
            assert dev == "cuda:0"
            raise RuntimeError("job failed")
    with claim_device("auto") as dev:
        assert dev == "cuda:0"


@pytest.mark.parametrize("device", ["cpu", "cuda:1", "mps"])
def test_explicit_devices_pass_through(fake_gpus, device):
    with claim_device(device) as dev:
        assert dev == device
    assert not fake_gpus.exists()


@pytest.mark.parametrize(("env", "pool"), [
    ({"CUDA_VISIBLE_DEVICES": "0"}, ["cuda:0"]),  # a scheduler gave this job one device
    ({"CUDA_VISIBLE_DEVICES": "GPU-0d1e2f3a-aaaa-bbbb-cccc-123456789abc"}, ["cuda:0"]),
    ({"CUDA_VISIBLE_DEVICES": "0,1", "SLURM_JOB_ID": "17"}, ["cuda:0", "cuda:1"]),  # a SLURM allocation of 2
    ({"CUDA_VISIBLE_DEVICES": ""}, ["auto"]),  # no device visible: the CPU
])
def test_the_pool_is_what_the_scheduler_made_visible(fake_gpus, monkeypatch, env, pool):
    monkeypatch.delenv("NEUROSPEC_FAKE_GPUS")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert [name for name, _ in devices.device_pool("auto")] == pool


def test_inside_a_slurm_allocation_jobs_spread_over_its_gpus(fake_gpus, monkeypatch):
    """`salloc --gpus=2`, then a local multi-GPU run: two jobs get the two GPUs, not both cuda:0."""
    monkeypatch.delenv("NEUROSPEC_FAKE_GPUS")
    monkeypatch.delenv("NEUROSPEC_GPU_LOCK_DIR")
    monkeypatch.setenv("TMPDIR", str(fake_gpus.parent))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    with claim_device("auto") as a, claim_device("auto") as b:
        assert (a, b) == ("cuda:0", "cuda:1")
        # the locks are this SLURM job's own: another job on the node sees its GPUs as 0, 1 too
        assert devices.lock_dir().name.endswith("-slurm4242")
        assert sorted(p.name for p in devices.lock_dir().iterdir()) == ["gpu0.lock", "gpu1.lock"]


def test_gpus_are_counted_without_torch(monkeypatch, tmp_path):
    monkeypatch.delenv("NEUROSPEC_FAKE_GPUS", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,7")
    assert devices.count_gpus() == 3
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    fake_proc = tmp_path / "gpus"
    for bus in ("0000:01:00.0", "0000:41:00.0"):
        (fake_proc / bus).mkdir(parents=True)
    monkeypatch.setattr(devices, "NVIDIA_PROC", fake_proc)
    assert devices.count_gpus() == 2
    monkeypatch.setattr(devices, "NVIDIA_PROC", tmp_path / "absent")
    assert devices.count_gpus() == 0 and devices.device_pool("auto") == [("auto", None)]


def test_a_single_gpu_is_locked_too(fake_gpus, monkeypatch):
    monkeypatch.setenv("NEUROSPEC_FAKE_GPUS", "1")
    with claim_device("auto") as a:
        assert a == "cuda:0"
        assert devices.try_lock(devices.lock_path(0)) is None  # a second job would wait


def test_several_visible_devices_outside_slurm_are_claimed_by_physical_id(fake_gpus, monkeypatch):
    """`export CUDA_VISIBLE_DEVICES=4,5,6` on a shared box: jobs still get one device each."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6")
    with claim_device("auto") as a, claim_device("auto") as b:
        assert (a, b) == ("cuda:0", "cuda:1")  # indices as torch numbers the visible devices
        assert sorted(p.name for p in fake_gpus.iterdir()) == ["gpu4.lock", "gpu5.lock"]
        # another run given other devices is not blocked by these locks
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
        with claim_device("auto") as c:
            assert c == "cuda:0"
        assert (fake_gpus / "gpu0.lock").exists()


def test_the_holder_pid_is_written_to_the_lock(fake_gpus):
    job = Job()
    try:
        assert (fake_gpus / "gpu0.lock").read_text().strip() == str(job.proc.pid)
    finally:
        job.release()
