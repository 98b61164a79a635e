"""Claiming a GPU per job on a machine with several: one lock file per device index.

Snakemake's ``--resources gpu=N`` limits how many GPU jobs run at once but does not tell a job
which GPU to use, nor set ``CUDA_VISIBLE_DEVICES``. A job asking for ``auto`` or ``cuda`` claims
the first free index by taking an exclusive ``flock`` on ``<lock_dir>/gpu<index>.lock``; the lock
is released when the job ends, also when it is killed (the kernel drops flocks of dead processes).
Under SLURM (``SLURM_JOB_GPUS``, or ``CUDA_VISIBLE_DEVICES`` inside a SLURM job) the job uses
what the scheduler gave it; so does a job whose ``CUDA_VISIBLE_DEVICES`` names a single device.
When ``CUDA_VISIBLE_DEVICES`` names several devices outside SLURM (``export
CUDA_VISIBLE_DEVICES=4,5,6,7`` to leave GPUs 0-3 to others), jobs claim among those, and the lock
file is named by the physical device (``gpu5.lock``), so two runs given different devices never
block each other, and two given the same ones never share.
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

log = logging.getLogger("neurospec")

LOCK_DIR_ENV = "NEUROSPEC_GPU_LOCK_DIR"
N_DEVICES_ENV = "NEUROSPEC_FAKE_GPUS"  # tests: pretend this many devices exist


def _n_devices() -> int:
    if os.environ.get(N_DEVICES_ENV):
        return int(os.environ[N_DEVICES_ENV])
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def lock_dir() -> Path:
    return Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / f"neurospec-gpu-locks-{os.getuid()}")


def _visible_devices() -> list[str] | None:
    """The entries of ``CUDA_VISIBLE_DEVICES`` (indices or UUIDs); ``None`` when it is unset."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    return [d.strip() for d in value.split(",") if d.strip()]


def scheduler_pinned() -> bool:
    """Whether something outside this job already chose its device (then it is used as given)."""
    if os.environ.get("SLURM_JOB_GPUS") or os.environ.get("SLURM_STEP_GPUS"):
        return True
    visible = _visible_devices()
    if visible is None:
        return False
    # inside a SLURM job CUDA_VISIBLE_DEVICES is the scheduler's allocation (the Snakemake executor
    # clears SLURM_JOB_GPUS in the job step); elsewhere one entry (or none) leaves nothing to choose
    return bool(os.environ.get("SLURM_JOB_ID")) or len(visible) <= 1


def _lock_name(index: int) -> str:
    """``gpu<physical id>``: the CUDA_VISIBLE_DEVICES entry of ``index`` when there is one."""
    visible = _visible_devices() or []
    name = visible[index] if index < len(visible) else str(index)
    return "gpu" + "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


@contextmanager
def claim_gpu_index(n_devices: int) -> Iterator[int | None]:
    """Hold an exclusive lock on the first free device index; ``None`` when all are taken."""
    directory = lock_dir()
    directory.mkdir(parents=True, exist_ok=True)
    for index in range(n_devices):
        fh = open(directory / f"{_lock_name(index)}.lock", "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            continue
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(f"{os.getpid()}\n")
            fh.flush()
            yield index
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()
        return
    yield None


@contextmanager
def claim_device(device: str) -> Iterator[str]:
    """Resolve ``auto``/``cuda`` to a device string this job may use alone; pass others through."""
    if device not in ("auto", "cuda") or scheduler_pinned():
        yield device
        return
    n = _n_devices()
    if n <= 1:
        yield device
        return
    with claim_gpu_index(n) as index:
        if index is None:
            log.warning("all %d GPUs are claimed by other jobs; sharing cuda:0", n)
            yield "cuda:0"
        else:
            log.info("claimed GPU %d of %d (lock %s)", index, n, lock_dir() / f"{_lock_name(index)}.lock")
            yield f"cuda:{index}"
