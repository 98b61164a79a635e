"""A run's identity and its private directory: ``NEUROSPEC_RUN`` (the Snakemake process the workers
belong to), ``<tmp>/neurospec-<uid>/run-<hash>`` (0700: sockets, pid files, busy locks) and the run's
token; the directories of runs that are gone are removed."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import socket
import stat
import tempfile
from pathlib import Path

RUN_ENV = "NEUROSPEC_RUN"  # "<host>:<pid>" of the Snakemake process; set by workflow/rules/common.smk
RUN_SCOPE_ENV = "NEUROSPEC_RUN_SLURM_JOB"  # the SLURM job (if any) that run belongs to
TOKEN_FILE = "token"  # the run's secret, in its private directory: requests without it are refused


def run_id() -> tuple[str, int]:
    host, _, pid = os.environ[RUN_ENV].rpartition(":")
    return host, int(pid)


def runs_dir() -> Path:
    """``<tmp>/neurospec-<uid>``: the parent of every run's directory on this host (not created here)."""
    base = Path(tempfile.gettempdir())
    if len(str(base)) > 40:  # Unix socket paths are limited to ~107 bytes
        base = Path("/tmp")
    return base / f"neurospec-{os.getuid()}"


def run_dir_path(run: str) -> Path:
    return runs_dir() / ("run-" + hashlib.sha1(run.encode()).hexdigest()[:10])


def run_dir(run: str | None = None) -> Path:
    """The private directory of a run's workers (sockets, pid files, busy locks, the run's token),
    created 0700 with its parent and verified (NeurospecError, one line, when it is not private).
    The run that creates it removes the directories of this host's runs that are gone."""
    run = run or os.environ[RUN_ENV]
    top = runs_dir()
    private_dir(top)
    d = run_dir_path(run)
    if private_dir(d):
        remove_dead_run_dirs(keep=d)
    info = d / "run.json"
    if not info.exists():
        info.write_text(json.dumps({"run": run}) + "\n")
    return d


def private_dir(path: Path) -> bool:
    """Create ``path`` with mode 0700 unless it exists; then make sure it is a directory (not a
    symlink) of this user that no one else may use: NeurospecError naming it otherwise. Returns
    whether it was created here."""
    from ..errors import NeurospecError

    created = False
    try:
        os.mkdir(path, 0o700)
        os.chmod(path, 0o700)  # whatever the umask
        created = True
    except FileExistsError:
        pass
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        problem = "is a symbolic link"
    elif not stat.S_ISDIR(st.st_mode):
        problem = "is not a directory"
    elif st.st_uid != os.getuid():
        problem = f"belongs to uid {st.st_uid}, not to you (uid {os.getuid()})"
    elif st.st_mode & 0o077:
        problem = f"is open to other users (mode {stat.S_IMODE(st.st_mode):04o}, must be 0700)"
    else:
        return created
    raise NeurospecError(f"the workers' directory {path} {problem}: another user could run code as you "
                         "through it; remove it (or have its owner remove it), or set TMPDIR to a private "
                         "directory (a path of at most 40 characters), then rerun")


def run_token(directory: Path) -> str:
    """The run's secret (created by the first of its processes to ask): a 0600 file of this user."""
    from ..errors import NeurospecError

    path = directory / TOKEN_FILE
    if not os.path.lexists(path):
        tmp = directory / f".{TOKEN_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)  # atomic and complete: the first process's token wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd) as fh:
        st = os.fstat(fh.fileno())
        token = fh.read().strip()
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077 or len(token) != 64:
        raise NeurospecError(f"the workers' token {path} is not a private file of yours (mode 0600, 64 hex "
                             "digits): remove its directory and rerun")
    return token


def remove_dead_run_dirs(keep: Path | None = None) -> list[Path]:
    """Remove the directories of this host's runs whose Snakemake process is gone (a killed run leaves
    its directory behind; its workers exit by themselves). Only this user's private directories,
    never a symlink; a run on another host, or of unknown origin, is kept. Returns what was removed."""
    removed = []
    here = socket.gethostname()
    for d in sorted(runs_dir().glob("run-*")):
        if d == keep:
            continue
        try:
            st = os.lstat(d)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
                continue
            host, _, pid = json.loads((d / "run.json").read_text())["run"].rpartition(":")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        if host != here or not pid.isdigit() or pid_alive(int(pid)):
            continue
        workers_alive = [w for w in d.glob("*.pid") if (p := _pidfile_pid(w)) and pid_alive(p)]
        if not workers_alive:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed



def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (an exited child not yet reaped, a zombie, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True
    if state == "Z":
        try:  # a zombie leader can still have threads exiting, holding the process's files (locks)
            if len(os.listdir(f"/proc/{pid}/task")) > 1:
                return True
        except OSError:
            pass
        try:
            os.waitpid(pid, os.WNOHANG)  # our own child (the job that started a worker): reap it
        except ChildProcessError:
            pass
        return False
    return True



def _pidfile_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
