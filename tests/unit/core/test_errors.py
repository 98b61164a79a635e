"""Disk and permission errors are the user's: one line naming the path, the cause and what to do,
nothing partial left (neurospec.atomic, neurospec.errors). Full disks are small tmpfs mounts (root)."""

from __future__ import annotations

import errno
import io
import logging
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from neurospec import atomic, models
from neurospec.data import demo
from neurospec.errors import (JobLogHandler, NeurospecError, disk_error, disk_error_line, one_line_errors,
                             user_error)
from neurospec.tables import read_table, write_table


def _mount_tmpfs(path: Path, size: str = "64k") -> None:
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def fill(path: Path) -> int:
    """Fill the file system of ``path`` to the last byte; returns the filler's size."""
    filler = path / "filler"
    written = 0
    with open(filler, "ab", buffering=0) as fh:
        try:
            while True:
                written += fh.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return written


@contextmanager
def full_disk(path: Path):
    """A tmpfs at ``path`` with no byte free (its filler file is named ``filler``)."""
    _mount_tmpfs(path)
    try:
        fill(path)
        yield path
    finally:
        _umount(path)


@contextmanager
def read_only(path: Path):
    """An empty tmpfs at ``path``, remounted read-only."""
    _mount_tmpfs(path)
    try:
        subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        yield path
    finally:
        _umount(path)


def _left(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name != "filler")


def test_full_disk_parquet_is_one_line_and_leaves_nothing(tmp_path):
    df = pd.DataFrame({"x": np.arange(20_000), "y": np.random.default_rng(0).random(20_000)})
    with full_disk(tmp_path / "disk") as disk:
        out = disk / "table.parquet"
        with pytest.raises(NeurospecError) as exc:
            write_table(df, out)
        line = str(exc.value)
        assert line.startswith(f"cannot write {out}: no space left on device (")
        assert "needed" in line and f"0 bytes free on {disk}" in line and "free space there" in line
        assert "\n" not in line
        assert _left(disk) == []  # no table, no temporary
    # the same table where there is room: the size named was the real one
    write_table(df, tmp_path / "t.parquet")
    assert read_table(tmp_path / "t.parquet").equals(df)


def test_full_disk_png_is_the_enospc_line_not_attribute_error(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def figure():
        fig, ax = plt.subplots()
        ax.imshow(np.random.default_rng(0).random((200, 200)))
        return fig

    buf = io.BytesIO()
    fig = figure()
    fig.savefig(buf, dpi=50, format="png", bbox_inches="tight")
    plt.close(fig)
    size = len(buf.getvalue())
    with full_disk(tmp_path / "disk") as disk:
        out = disk / "figure.png"
        with pytest.raises(NeurospecError) as exc:
            atomic.save_png(figure(), out, dpi=50)
        assert str(exc.value).startswith(f"cannot write {out}: no space left on device ({size / 1e3:.1f} kB needed")
        assert _left(disk) == []
        # matplotlib itself, writing to the full disk, raises an exception whose chain holds the ENOSPC
        try:
            figure().savefig(disk / "direct.png", dpi=50)
        except Exception as raw:  # an OSError without a file name, or an AttributeError raised handling it
            assert user_error(raw).startswith("no space left on device (ENOSPC) while writing a file; free space")
        else:
            raise AssertionError("matplotlib wrote a PNG to a full disk")


def test_an_attribute_error_raised_while_handling_enospc_is_the_enospc_line():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "results/x.png")
        except OSError:
            raise AttributeError("'_idat' object has no attribute 'fileno'")
    except AttributeError as exc:
        assert disk_error(exc).errno == errno.ENOSPC
        assert user_error(exc).startswith("cannot access results/x.png: no space left on device")
    assert user_error(AttributeError("a bug")) is None
    assert user_error(OSError(errno.ENOENT, "No such file")) is None  # not a disk error: a bug's traceback


def test_read_only_folder_is_one_line(tmp_path):
    with read_only(tmp_path / "ro") as ro:
        for write in (lambda p: atomic.write_bytes(p, b"abc"), lambda p: atomic.write_json(p, {"a": 1}),
                      lambda p: write_table(pd.DataFrame({"a": [1]}), p)):
            with pytest.raises(NeurospecError, match=rf"^cannot write {ro}/out: read-only file system; "
                                                     "remount it read-write"):
                write(ro / "out")
            with pytest.raises(NeurospecError, match=r"read-only file system"):
                write(ro / "sub" / "out")  # the folder cannot even be made
        assert _left(ro) == []


def test_permission_denied_is_one_line(tmp_path):
    err = OSError(errno.EACCES, "Permission denied", str(tmp_path / "x"))
    assert user_error(err) == (f"cannot access {tmp_path / 'x'}: permission denied; check its permissions and "
                               "its folders' (this user must read the inputs and write the outputs)")
    assert disk_error_line(err, tmp_path / "x") == (f"cannot write {tmp_path / 'x'}: permission denied; make that "
                                                    "directory writable by this user, or run in one you own")
    assert user_error(PermissionError(errno.EPERM, "Operation not permitted", "y")).startswith(
        "cannot access y: operation not permitted")


def test_model_directory_on_a_full_disk_leaves_nothing(tmp_path):
    texts = demo.corpus_texts()[::20]
    with full_disk(tmp_path / "disk") as disk:
        out = disk / "models" / "demo"
        with pytest.raises(NeurospecError, match=rf"^cannot write {out}: no space left on device"):
            models.build_demo_model(out, texts, seed=0, vocab_size=400, hidden_size=16, intermediate_size=32,
                                    num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1)
        assert not out.exists() and _left(disk / "models") == []


def test_safetensors_weights_on_a_full_disk_are_the_enospc_line(tmp_path):
    """safetensors raises a SafetensorError (not an OSError) that has "(os error 28)" in its text only."""
    import torch
    from safetensors.torch import save_file

    with full_disk(tmp_path / "disk") as disk:
        out = disk / "model"
        (disk / "filler").write_bytes(b"\0" * (64 - 16) * 1024)  # room for 16 kB, and 200 kB of weights
        with pytest.raises(NeurospecError, match=rf"^cannot write {out}: no space left on device \(16\.\d kB free "
                                                 rf"on {disk}\)( \(.* written before the failure\))?; free space there"):
            with atomic.atomic_dir(out) as tmp:
                save_file({"w": torch.zeros(50_000)}, str(tmp / "model.safetensors"))
        assert _left(disk) == []


def test_one_line_errors_maps_disk_errors_and_keeps_bugs(tmp_path, capsys):
    log = tmp_path / "job.log"
    with pytest.raises(SystemExit) as exc:
        with one_line_errors(str(log)):
            raise OSError(errno.ENOSPC, "No space left on device", "results/a.parquet")
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "neurospec: error: cannot access results/a.parquet: no space left on device" in err
    assert "Traceback" not in err and "a bug" not in err
    assert "no space left on device" in log.read_text()
    with pytest.raises(KeyError):
        with one_line_errors(str(log)):
            raise KeyError("a bug keeps its traceback")
    assert "a bug" in log.read_text()


def test_job_log_on_a_full_disk_or_read_only_folder(tmp_path, capsys):
    with read_only(tmp_path / "ro") as ro:
        with pytest.raises(SystemExit):
            with one_line_errors(str(ro / "job.log")):
                pass
        err = capsys.readouterr().err
        assert err.strip() == f"neurospec: error: log file: cannot write {ro / 'job.log'}: read-only file system; " \
                              "remount it read-write, or run the workflow in a writable directory"
    with full_disk(tmp_path / "disk") as disk:
        (disk / "filler").unlink()
        handler = JobLogHandler(disk / "job.log")
        fill(disk)
        logger = logging.getLogger("neurospec.test")
        logger.addHandler(handler)
        try:
            logger.warning("x" * 10_000)  # more than the page cache holds back: the write fails
            handler.flush()
        finally:
            logger.removeHandler(handler)
            handler.close()
        with pytest.raises(NeurospecError, match=rf"^log file: cannot write {disk / 'job.log'}: no space left"):
            handler.check()
    assert "Logging error" not in capsys.readouterr().err


def test_check_writable_names_the_unwritable_folder(tmp_path):
    """The start of a run (onstart): a read-only folder, and one this user may not write (a non-root user)."""
    with read_only(tmp_path / "ro") as ro:
        atomic.check_writable([tmp_path / "ok" / "a.parquet"])  # a folder to be made where it can be: fine
        with pytest.raises(NeurospecError, match=rf"^cannot write {ro}: read-only file system \(2 output or log "
                                                 rf"file\(s\) of this run go there, e.g. {ro}/a/x.png\); remount"):
            atomic.check_writable([tmp_path / "ok" / "a.parquet", ro / "a" / "x.png", ro / "b.log"])


def test_check_writable_names_a_folder_this_user_may_not_write():
    """As a non-root user (root may write anywhere): a folder without write permission."""
    import shutil
    import tempfile

    python = shutil.which("python3", path="/usr/bin:/usr/local/bin")
    if os.geteuid() != 0 or python is None:
        pytest.skip("needs root (to run as another user) and a python3 in /usr/bin that user can run")
    top = Path(tempfile.mkdtemp(prefix="neurospec-perm-", dir="/tmp"))
    try:
        top.chmod(0o755)
        locked = top / "locked"
        locked.mkdir(mode=0o555)
        code = ("import sys; from neurospec.atomic import check_writable\n"
                "try:\n check_writable([sys.argv[1]])\nexcept Exception as e:\n print(type(e).__name__, e)")
        proc = subprocess.run([python, "-c", code, str(locked / "x.png")], capture_output=True, text=True, user=65534,
                              env={"PYTHONPATH": str(Path(atomic.__file__).parents[1])}, cwd="/tmp")
        assert proc.stdout.strip() == (
            f"NeurospecError cannot write {locked}: permission denied (1 output or log file(s) of this run go there, "
            f"e.g. {locked}/x.png); make that directory writable by this user, or run in one you own"), proc.stderr
    finally:
        shutil.rmtree(top)


def test_atomic_dir_says_how_much_it_wrote_before_the_failure(tmp_path):
    with pytest.raises(NeurospecError, match=rf"^cannot write {tmp_path / 'm'}: no space left on device \(.* free on "
                                             rf"{tmp_path}\) \(8\.2 kB of it written before the failure\); free space"):
        with atomic.atomic_dir(tmp_path / "m") as tmp:
            (tmp / "a").write_bytes(b"x" * 8192)
            raise OSError(errno.ENOSPC, "No space left on device")
    assert list(tmp_path.iterdir()) == []
