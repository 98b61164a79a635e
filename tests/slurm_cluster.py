"""A throwaway single-node SLURM cluster for tests (issue "Scale out").

Starts, on this very host, ``munged`` (own key, socket, pid and log files),
``slurmctld`` and ``slurmd`` (both in the foreground, ``-D``, as children of
the test process) with a generated ``/etc/slurm/slurm.conf`` and
``/etc/slurm/gres.conf``.  The node advertises ``Gres=gpu:<n>`` backed by
ordinary files created here as stand-ins for ``/dev/nvidia*``, so a Snakemake
rule with ``resources: gpu=1`` goes through SLURM's real gres/gpu path
(``sbatch --gpus=1`` -> ``SLURM_JOB_GPUS`` / ``CUDA_VISIBLE_DEVICES``).

Needs root and Debian's ``slurm-wlm`` + ``munge`` (``.ci/install-slurm.sh``).
Everything is stopped by process id in :meth:`Cluster.stop`; the previous
``/etc/slurm/{slurm,gres}.conf`` are restored.  Daemons listen on free,
random ports and use their own munge socket, so a system SLURM/munge (if any)
is left alone; a file lock serialises two test sessions on one host.

Usage::

    from slurm_cluster import cluster_available, start_cluster

    ok, reason = cluster_available()
    if not ok:
        pytest.skip(reason)
    with start_cluster(tmp_dir) as cluster:
        subprocess.run(["snakemake", *cluster.snakemake_args(), ...])

or, in pytest, the session-scoped ``slurm_cluster`` fixture defined below
(import it into the test module: ``from slurm_cluster import slurm_cluster``).
"""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

SLURM_CONF = Path("/etc/slurm/slurm.conf")
GRES_CONF = Path("/etc/slurm/gres.conf")
LOCK_FILE = Path("/tmp/neurospec-slurm-cluster.lock")
PARTITION = "debug"
N_GPUS = 2

REQUIRED_BINARIES = (
    "munged",
    "slurmctld",
    "slurmd",
    "slurmstepd",
    "sbatch",
    "srun",
    "squeue",
    "sinfo",
    "scontrol",
    "scancel",
)
_SBIN_DIRS = ("/usr/sbin", "/sbin", "/usr/local/sbin")


class ClusterError(RuntimeError):
    """The cluster could not be started (message says why, with log tails)."""


def _which(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in _SBIN_DIRS:
        p = Path(d) / name
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return None


def cluster_available() -> tuple[bool, str]:
    """(True, "") if a throwaway cluster can be started here, else (False, reason)."""
    if os.environ.get("NEUROSPEC_NO_SLURM"):
        return False, "NEUROSPEC_NO_SLURM is set"
    if not sys.platform.startswith("linux"):
        return False, f"SLURM test cluster needs Linux, not {sys.platform}"
    if os.geteuid() != 0:
        return False, "SLURM test cluster needs root (writes /etc/slurm, runs slurmd)"
    missing = [b for b in REQUIRED_BINARIES if _which(b) is None]
    if missing:
        return False, (
            "SLURM/munge binaries missing: "
            + ", ".join(missing)
            + " (run .ci/install-slurm.sh)"
        )
    if shutil.which("snakemake") is None:
        return False, "snakemake CLI not on PATH"
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return False, "snakemake-executor-plugin-slurm is not installed"
    return True, ""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _short_hostname() -> str:
    out = subprocess.run(["hostname", "-s"], capture_output=True, text=True)
    name = out.stdout.strip() if out.returncode == 0 else ""
    return name or socket.gethostname().split(".")[0]


def _node_hardware() -> dict[str, str]:
    """What ``slurmd -C`` detects (CPUs, sockets, cores, threads, RealMemory)."""
    out = subprocess.run(
        [_which("slurmd") or "slurmd", "-C"], capture_output=True, text=True, timeout=30
    )
    hw: dict[str, str] = {}
    for line in out.stdout.splitlines():
        if line.startswith("NodeName="):
            for tok in line.split():
                k, _, v = tok.partition("=")
                hw[k] = v
    keep = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore")
    res = {k: hw[k] for k in keep if k in hw}
    if "CPUs" not in res:
        res = {"CPUs": str(os.cpu_count() or 1)}
    mem = hw.get("RealMemory")
    if not mem:
        with open("/proc/meminfo") as f:
            kb = int(next(l for l in f if l.startswith("MemTotal")).split()[1])
        mem = str(kb // 1024)
    res["RealMemory"] = mem
    return res


def _tail(path: Path, n: int = 15) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()[-n:]
    except OSError:
        return f"(no {path.name})"
    return f"--- {path} ---\n" + "\n".join(lines)


@dataclass
class Cluster:
    """A running single-node cluster; ``stop()`` (or ``with``) tears it down."""

    workdir: Path  # configs, logs, state (the tmp dir given to start_cluster)
    rundir: Path  # short path for unix sockets, spool, pid files
    hostname: str
    partition: str = PARTITION
    gpus: int = N_GPUS
    cpus: int = 1
    real_memory_mb: int = 0
    pids: dict[str, int] = field(default_factory=dict)
    _procs: dict[str, subprocess.Popen] = field(default_factory=dict, repr=False)
    _backups: dict[Path, Path | None] = field(default_factory=dict, repr=False)
    _lock_fd: int | None = field(default=None, repr=False)
    # False if mknod failed and plain files stand in for /dev/nvidia*: jobs are
    # then still scheduled against the gpu gres, but slurmd binds no device
    # (empty SLURM_JOB_GPUS / CUDA_VISIBLE_DEVICES in the job).
    fake_devices_are_char_devices: bool = True
    _stopped: bool = field(default=False, repr=False)

    # --- for callers ------------------------------------------------------
    @property
    def logdir(self) -> Path:
        return self.workdir / "log"

    def snakemake_args(
        self,
        jobs: int = 2,
        default_resources: dict[str, object] | None = None,
        status_check_seconds: int = 5,
    ) -> list[str]:
        """Extra ``snakemake`` CLI args that run jobs on this cluster.

        ``default_resources`` are merged over ``slurm_partition=<partition>,
        mem_mb=500, runtime=10`` (give ``mem_mb`` etc. here rather than a second
        ``--default-resources``, which would replace this one).

        ``status_check_seconds``: the executor polls squeue after this many
        seconds, then backs off by +10 s per poll while nothing finished
        (checks at 5, 20, 45 s ...); a toy job takes ~10-15 s here.
        """
        res: dict[str, object] = {
            "slurm_partition": self.partition,
            "mem_mb": 500,
            "runtime": 10,
        }
        res.update(default_resources or {})
        return [
            "--executor",
            "slurm",
            "--jobs",
            str(jobs),
            "--slurm-no-account",
            # accounting is off, so sacct cannot answer; squeue can (MinJobAge=300)
            "--slurm-status-command",
            "squeue",
            "--slurm-init-seconds-before-status-checks",
            str(status_check_seconds),
            "--latency-wait",
            "5",
            "--default-resources",
            *[f"{k}={v}" for k, v in res.items()],
        ]

    def run(self, *cmd: str, check: bool = True, timeout: float = 30) -> str:
        """Run a SLURM client command (``squeue``, ``scontrol`` ...); return stdout."""
        out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise ClusterError(
                f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr.strip()}"
            )
        return out.stdout

    def node_state(self) -> str:
        out = subprocess.run(
            ["sinfo", "-h", "-n", self.hostname, "-o", "%T"],
            capture_output=True,
            text=True,
            timeout=15,
        )
        return (
            out.stdout.strip()
            if out.returncode == 0
            else f"sinfo: {out.stderr.strip()}"
        )

    def logs(self) -> str:
        return "\n".join(
            _tail(self.logdir / n)
            for n in (
                "munged.log",
                "munged.stdout",
                "slurmctld.log",
                "slurmctld.stdout",
                "slurmd.log",
                "slurmd.stdout",
            )
            if (self.logdir / n).exists()
        )

    # --- lifecycle ----------------------------------------------------------
    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """Cancel jobs, stop slurmd, slurmctld, munged (by pid), restore configs."""
        if self._stopped:
            return
        self._stopped = True
        if "slurmctld" in self._procs and self._procs["slurmctld"].poll() is None:
            subprocess.run(
                ["scancel", "--partition", self.partition],
                capture_output=True,
                timeout=15,
            )
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                out = subprocess.run(
                    ["squeue", "-h", "-p", self.partition, "-o", "%i"],
                    capture_output=True,
                    text=True,
                    timeout=15,
                )
                if out.returncode != 0 or not out.stdout.strip():
                    break
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self._procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            try:
                os.kill(proc.pid, signal.SIGTERM)
                proc.wait(timeout=15)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        self._restore_configs()
        shutil.rmtree(self.rundir, ignore_errors=True)
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def _install_config(self, path: Path, text: str) -> None:
        if path not in self._backups:
            if path.exists() or path.is_symlink():
                backup = self.workdir / f"{path.name}.orig"
                shutil.copy2(path, backup, follow_symlinks=False)
                self._backups[path] = backup
            else:
                self._backups[path] = None
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o644)

    def _restore_configs(self) -> None:
        for path, backup in self._backups.items():
            try:
                if backup is None:
                    path.unlink(missing_ok=True)
                else:
                    path.unlink(missing_ok=True)
                    shutil.copy2(backup, path, follow_symlinks=False)
            except OSError as e:  # pragma: no cover - best effort
                print(f"slurm_cluster: could not restore {path}: {e}", file=sys.stderr)
        self._backups.clear()

    def _spawn(self, name: str, argv: list[str]) -> None:
        out = open(self.logdir / f"{name}.stdout", "ab")
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # keep test-runner signals (Ctrl-C) away
        )
        out.close()
        self._procs[name] = proc
        self.pids[name] = proc.pid

    def _wait(self, what: str, ok, timeout: float, daemon: str | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if daemon and self._procs[daemon].poll() is not None:
                raise ClusterError(
                    f"{daemon} exited with {self._procs[daemon].returncode} "
                    f"while waiting for {what}\n{self.logs()}"
                )
            if ok():
                return
            time.sleep(0.3)
        raise ClusterError(
            f"timed out after {timeout:.0f}s waiting for {what}\n{self.logs()}"
        )


def _make_fake_device(path: Path) -> bool:
    """Create a GPU stand-in: a char device clone of /dev/null (1:3) if mknod
    works, else an ordinary file.  Return True for the char device.

    slurmd 22.05 logs "is not a valid character or block device" for ordinary
    files and then binds no device to the job (empty SLURM_JOB_GPUS /
    CUDA_VISIBLE_DEVICES), though the gres *count* is still scheduled.
    """
    if path.exists() or path.is_symlink():
        path.unlink()
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        return True
    except OSError:
        path.touch()
        return False


def _write_conf(c: Cluster, munge_socket: Path, hw: dict[str, str]) -> None:
    ctld_port, slurmd_port = _free_port(), _free_port()
    while slurmd_port == ctld_port:
        slurmd_port = _free_port()
    state = c.workdir / "state"
    spool = c.rundir / "spool"
    for d in (state, spool):
        d.mkdir(parents=True, exist_ok=True)
    node_hw = " ".join(f"{k}={v}" for k, v in hw.items())
    conf = f"""\
# Generated by tests/slurm_cluster.py for a throwaway single-node test cluster.
# The original file (if any) is restored when the test session ends.
ClusterName=neurospectest
SlurmctldHost={c.hostname}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={munge_socket}
CredType=cred/munge
StateSaveLocation={state}
SlurmdSpoolDir={spool}
SlurmctldPidFile={c.rundir}/slurmctld.pid
SlurmdPidFile={c.rundir}/slurmd.pid
SlurmctldLogFile={c.logdir}/slurmctld.log
SlurmdLogFile={c.logdir}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No slurmdbd: accounting and job accounting-gathering off.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# No cgroups needed (often unavailable in containers/VMs).
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MailProg=/bin/true
MpiDefault=none
PropagateResourceLimits=NONE
SchedulerType=sched/backfill
# start jobs at once (default batch_sched_delay is 3 s)
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
ReturnToService=2
SlurmdParameters=config_overrides
# Keep finished jobs visible to squeue long enough for the Snakemake
# executor's status polling (it checks MinJobAge >= 3 * init interval).
MinJobAge=300
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName={c.hostname} NodeAddr=127.0.0.1 {node_hw} Gres=gpu:{c.gpus} State=UNKNOWN
PartitionName={c.partition} Nodes={c.hostname} Default=YES MaxTime=INFINITE State=UP
"""
    c._install_config(SLURM_CONF, conf)
    devdir = c.workdir / "fakedev"
    devdir.mkdir(exist_ok=True)
    gres_lines = []
    for i in range(c.gpus):
        dev = devdir / f"nvidia{i}"
        c.fake_devices_are_char_devices &= _make_fake_device(dev)
        gres_lines.append(f"NodeName={c.hostname} Name=gpu File={dev}")
    c._install_config(
        GRES_CONF,
        "# Generated by tests/slurm_cluster.py: GPU stand-ins (char-device clones\n"
        "# of /dev/null, or plain files where mknod is not allowed).\n"
        "AutoDetect=off\n" + "\n".join(gres_lines) + "\n",
    )


def start_cluster(
    tmp_dir: str | os.PathLike, gpus: int = N_GPUS, timeout: float = 60
) -> Cluster:
    """Start munged + slurmctld + slurmd; return once the node is idle.

    Raises :class:`ClusterError` (with daemon log tails) if that fails; in
    that case everything already started is stopped again.
    """
    ok, reason = cluster_available()
    if not ok:
        raise ClusterError(reason)
    workdir = Path(tmp_dir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    # unix socket paths must stay < 108 bytes: keep them under a short dir
    rundir = Path(tempfile.mkdtemp(prefix="nsslurm-", dir="/tmp"))
    hw = _node_hardware()
    c = Cluster(
        workdir=workdir,
        rundir=rundir,
        hostname=_short_hostname(),
        gpus=gpus,
        cpus=int(hw["CPUs"]),
        real_memory_mb=int(hw["RealMemory"]),
    )
    c.logdir.mkdir(exist_ok=True)

    lock_fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + 600
    while True:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(lock_fd)
                shutil.rmtree(rundir, ignore_errors=True)
                raise ClusterError(f"another test cluster holds {LOCK_FILE} (10 min)")
            time.sleep(1)
    c._lock_fd = lock_fd

    try:
        # munge: own key, socket, pid, seed and log (system munged untouched)
        # socket dir world-traversable (munged warns otherwise and non-root
        # clients could not authenticate); key in a private dir
        rundir.chmod(0o755)
        mdir = rundir / "munge"
        mdir.mkdir(mode=0o755)
        kdir = rundir / "munge-key"
        kdir.mkdir(mode=0o700)
        key = kdir / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        msock = mdir / "munge.socket"
        c._spawn(
            "munged",
            [
                _which("munged"),
                "--foreground",
                "--force",
                f"--socket={msock}",
                f"--key-file={key}",
                f"--pid-file={mdir / 'munged.pid'}",
                f"--seed-file={kdir / 'munged.seed'}",
                f"--log-file={c.logdir / 'munged.log'}",
            ],
        )
        c._wait("munged socket", msock.exists, 20, daemon="munged")

        _write_conf(c, msock, hw)

        c._spawn("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(SLURM_CONF)])
        c._wait(
            "slurmctld to answer `scontrol ping`",
            lambda: "UP"
            in subprocess.run(
                ["scontrol", "ping"], capture_output=True, text=True, timeout=10
            ).stdout,
            timeout,
            daemon="slurmctld",
        )
        c._spawn("slurmd", [_which("slurmd"), "-D", "-f", str(SLURM_CONF)])

        def idle() -> bool:
            state = c.node_state()
            if state.startswith(("drain", "down", "inval", "fail")):
                # e.g. left over from an earlier run: bring it back
                subprocess.run(
                    ["scontrol", "update", f"NodeName={c.hostname}", "State=RESUME"],
                    capture_output=True,
                    timeout=10,
                )
            return state == "idle"

        c._wait(
            f"node {c.hostname} to become idle in sinfo " f"(last state: see `sinfo`)",
            idle,
            timeout,
            daemon="slurmd",
        )
    except BaseException:
        c.stop()
        raise
    atexit.register(c.stop)  # safety net if the caller forgets
    return c


# --------------------------------------------------------------------------- #
# pytest glue
# --------------------------------------------------------------------------- #
_SHARED: Cluster | None = None


def shared_cluster(tmp_path_factory) -> Cluster:
    """One cluster per test session (started on first use, reused after)."""
    global _SHARED
    if _SHARED is None or _SHARED._stopped:
        _SHARED = start_cluster(tmp_path_factory.mktemp("slurm-cluster"))
    return _SHARED


try:
    import pytest
except ImportError:  # pragma: no cover - module also usable without pytest
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture(scope="session")
    def slurm_cluster(tmp_path_factory):
        """Session-scoped running :class:`Cluster`; skips if not available."""
        ok, reason = cluster_available()
        if not ok:
            pytest.skip(reason)
        cluster = shared_cluster(tmp_path_factory)
        yield cluster
        cluster.stop()  # idempotent; other importers of this fixture share it
