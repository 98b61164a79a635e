"""Which GPU a job may use: one flock'ed lock file per device, held while the device is in use.

Snakemake's ``--resources gpu=N`` limits how many GPU jobs run at once but does not tell a job
which GPU to use, nor set ``CUDA_VISIBLE_DEVICES``. For ``model.device: auto`` (or ``cuda``) the
usable devices are the ones ``CUDA_VISIBLE_DEVICES`` names (a SLURM allocation, or
``export CUDA_VISIBLE_DEVICES=4,5,6,7`` to leave GPUs 0-3 to others), else every GPU of the machine;
a user of a device holds an exclusive ``flock`` on ``<lock_dir>/gpu<physical id>.lock`` (the
kernel releases it when the holder ends, also when it is killed). When every device is held, the
job waits for one: it never shares a GPU with another model copy. Explicit devices (``cpu``,
``cuda:1``) are used as given, unlocked.

Lock files live in a directory per user and, inside a SLURM job, per job (``SLURM_JOB_ID``): SLURM
renumbers each job's GPUs from 0, so two jobs on one node must not share lock names. GPUs are
counted without importing torch (``CUDA_VISIBLE_DEVICES``, else ``/proc/driver/nvidia/gpus``).
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

log = logging.getLogger("neurospec")

LOCK_DIR_ENV = "NEUROSPEC_GPU_LOCK_DIR"
N_DEVICES_ENV = "NEUROSPEC_FAKE_GPUS"  # tests: pretend this many devices exist
NVIDIA_PROC = Path("/proc/driver/nvidia/gpus")


def visible_devices() -> list[str] | None:
    """The entries of ``CUDA_VISIBLE_DEVICES`` (indices or UUIDs); ``None`` when it is unset."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    return [d.strip() for d in value.split(",") if d.strip()]


def count_gpus() -> int:
    """How many CUDA devices this process may use, without importing torch.

    ``CUDA_VISIBLE_DEVICES`` (a scheduler's allocation) first, then the machine's GPUs (for tests,
    ``NEUROSPEC_FAKE_GPUS`` pretends the machine has that many; they compute on the CPU).
    """
    visible = visible_devices()
    if visible is not None:
        return len(visible)
    if os.environ.get(N_DEVICES_ENV):
        return int(os.environ[N_DEVICES_ENV])
    try:
        return sum(1 for _ in NVIDIA_PROC.iterdir())
    except OSError:
        return 0


def lock_dir() -> Path:
    if os.environ.get(LOCK_DIR_ENV):
        return Path(os.environ[LOCK_DIR_ENV])
    job = os.environ.get("SLURM_JOB_ID")
    return Path(tempfile.gettempdir()) / (f"neurospec-gpu-locks-{os.getuid()}" + (f"-slurm{job}" if job else ""))


def lock_path(index: int) -> Path:
    """``gpu<physical id>.lock``: named by the CUDA_VISIBLE_DEVICES entry of ``index`` when there is one."""
    visible = visible_devices() or []
    name = visible[index] if index < len(visible) else str(index)
    return lock_dir() / ("gpu" + "".join(c if c.isalnum() or c in "-_." else "_" for c in name) + ".lock")


def device_pool(device: str) -> list[tuple[str, Path | None]]:
    """The devices a job asking for ``device`` may take, each with its lock file (None: no lock)."""
    if device not in ("auto", "cuda"):
        return [(device, None)]
    n = count_gpus()
    if n == 0:
        return [(device, None)]  # no GPU: "auto" runs on the CPU, "cuda" fails in load_model, naming why
    return [(f"cuda:{i}", lock_path(i)) for i in range(n)]


def try_lock(path: Path) -> IO | None:
    """An open file holding an exclusive flock on ``path`` (its pid written in), or None if held."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    return fh


def release(fh: IO) -> None:
    fcntl.flock(fh, fcntl.LOCK_UN)
    fh.close()


@contextmanager
def claim_device(device: str, poll_s: float = 0.5) -> Iterator[str]:
    """Hold a device from ``device_pool(device)`` for the block: the first free one, waiting if all are held."""
    pool = device_pool(device)
    if len(pool) == 1 and pool[0][1] is None:
        yield pool[0][0]
        return
    waited = False
    while True:
        for name, path in pool:
            fh = try_lock(path)
            if fh is None:
                continue
            try:
                log.info("claimed GPU %s of %d (lock %s)", name.removeprefix("cuda:"), len(pool), path)
                yield name
            finally:
                release(fh)
            return
        if not waited:
            log.warning("all %d GPUs are held by other jobs; waiting for one to be free", len(pool))
            waited = True
        time.sleep(poll_s)
