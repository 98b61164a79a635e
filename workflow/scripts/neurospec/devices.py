"""Claiming a GPU per job on a machine with several: one lock file per device index.

Snakemake's ``--resources gpu=N`` limits how many GPU jobs run at once but does not tell a job
which GPU to use, nor set ``CUDA_VISIBLE_DEVICES``. A job asking for ``auto`` or ``cuda`` claims
the first free index by taking an exclusive ``flock`` on ``<lock_dir>/gpu<index>.lock``; the lock
is released when the job ends, also when it is killed (the kernel drops flocks of dead processes).
Under SLURM (``SLURM_JOB_GPUS``/``CUDA_VISIBLE_DEVICES`` set by the scheduler) the job uses
what it was given.
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


@contextmanager
def claim_gpu_index(n_devices: int) -> Iterator[int | None]:
    """Hold an exclusive lock on the first free device index; ``None`` when all are taken."""
    directory = lock_dir()
    directory.mkdir(parents=True, exist_ok=True)
    for index in range(n_devices):
        fh = open(directory / f"gpu{index}.lock", "a+")
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
    n = _n_devices()
    scheduler_pinned = bool(os.environ.get("SLURM_JOB_GPUS")) or bool(os.environ.get("CUDA_VISIBLE_DEVICES"))
    if device not in ("auto", "cuda") or n <= 1 or scheduler_pinned:
        yield device
        return
    with claim_gpu_index(n) as index:
        if index is None:
            log.warning("all %d GPUs are claimed by other jobs; sharing cuda:0", n)
            yield "cuda:0"
        else:
            log.info("claimed GPU %d of %d (lock in %s)", index, n, lock_dir())
            yield f"cuda:{index}"
