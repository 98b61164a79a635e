"""Atomic writes: every file a job writes (Parquet tables, PNG figures, JSON, model directories) goes
through this module.

Each writer writes a temporary file (or directory) beside its target, in the same directory so that
the rename is atomic, and renames it onto the target only once it is complete; on any failure the
temporary is removed and the target is left as it was. A disk or permission error on the way (a full
disk, ENOSPC; EACCES / EPERM; a read-only file system, EROFS) becomes a NeurospecError naming the
target, the cause, how much was needed when that is known, and what to do (``errors.disk_error_line``).

Figures and tables are serialised in memory first and written with one ``write_bytes``: the bytes
needed are then known, and a full disk is a plain OSError, never a writer's own confusion
(matplotlib's PNG writer raises an AttributeError on a full disk).
"""

from __future__ import annotations

import errno
import functools
import io
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import NeurospecError, disk_error, disk_error_line, human_size


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _raise_disk_error(exc: BaseException, path: Path, needed: int | None) -> None:
    err = disk_error(exc)
    if err is not None:
        raise NeurospecError(disk_error_line(err, path, needed)) from None


@contextmanager
def atomic_path(path: str | os.PathLike, needed: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the body succeeds.

    ``needed``: the bytes the body will write, when known (named in a full disk's error line)."""
    path = Path(path)
    tmp_path: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp made it 0600: give it the mode a plain open() would
        os.replace(tmp_path, path)
        for stale in path.parent.glob(f".{path.name}.*.part"):  # left by a killed earlier attempt
            stale.unlink(missing_ok=True)
    except Exception as exc:
        _remove(tmp_path)
        _raise_disk_error(exc, path, needed)
        raise
    finally:
        _remove(tmp_path)


def _remove(tmp: Path | None) -> None:
    if tmp is None:
        return
    try:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
    except OSError:
        pass


def write_bytes(path: str | os.PathLike, data: bytes | bytearray | memoryview) -> None:
    """Write ``data`` to ``path`` atomically."""
    view = memoryview(data)
    with atomic_path(path, needed=view.nbytes) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(view)  # closing flushes: a full disk found then is raised here too


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, value: Any, **kwargs: Any) -> None:
    """``value`` as JSON (``json.dumps`` keyword arguments) and a final newline, atomically."""
    write_text(path, json.dumps(value, **kwargs) + "\n")


def write_parquet(table, path: str | os.PathLike) -> None:
    """A pyarrow Table as a Parquet file, atomically (serialised in memory first)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    write_bytes(path, sink.getvalue())


# Formats a figure is saved in (config figures.format): the PNG always, and each vector format of the
# task that saves it (``with_formats``) as the PNG's stem with its suffix, text kept as text (SVG:
# <text> elements; PDF: TrueType fonts), so that a paper's editor can change it.
FIGURE_FORMATS = ("png", "svg", "pdf")
_VECTOR_RC = {"svg.fonttype": "none", "pdf.fonttype": 42}
_extra_formats: ContextVar[tuple[str, ...]] = ContextVar("neurospec_figure_formats", default=())


def figure_paths(path: str | os.PathLike, formats: Iterable[str]) -> list[str]:
    """The files of a figure whose PNG is ``path`` in ``formats`` besides PNG (the rules' outputs)."""
    return [str(Path(path).with_suffix(f".{f}")) for f in formats if f != "png"]


def with_formats(task):
    """A figure task that also takes ``formats`` (figures.format): each ``save_png`` inside it writes
    those formats too. None (a task called by another): the caller's formats."""

    @functools.wraps(task)
    def wrapper(*args: Any, formats: Iterable[str] | None = None, **kwargs: Any) -> Any:
        if formats is None:
            return task(*args, **kwargs)
        unknown = sorted(set(formats) - set(FIGURE_FORMATS))
        if unknown:
            raise NeurospecError(f"figures.format: {', '.join(unknown)} is not one of {', '.join(FIGURE_FORMATS)}")
        token = _extra_formats.set(tuple(f for f in dict.fromkeys(formats) if f != "png"))
        try:
            return task(*args, **kwargs)
        finally:
            _extra_formats.reset(token)

    return wrapper


def save_png(fig, path: str | os.PathLike, dpi: int = 110, close: bool = True) -> None:
    """A matplotlib figure as a PNG (``bbox_inches="tight"``), atomically, and in the vector formats of
    the running task (``with_formats``) beside it; the figure is closed."""
    buf = io.BytesIO()
    vectors = {}
    try:
        fig.savefig(buf, dpi=dpi, format="png", bbox_inches="tight")
        if _extra_formats.get():
            import matplotlib

            with matplotlib.rc_context(_VECTOR_RC):
                for fmt in _extra_formats.get():
                    vectors[fmt] = io.BytesIO()
                    fig.savefig(vectors[fmt], dpi=dpi, format=fmt, bbox_inches="tight")
    finally:
        if close:
            import matplotlib.pyplot as plt

            plt.close(fig)
    write_bytes(path, buf.getbuffer())
    for fmt, data in vectors.items():
        write_bytes(Path(path).with_suffix(f".{fmt}"), data.getbuffer())


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``path`` (which must not exist or be empty); rename it onto
    ``path`` only if the body succeeds (model files: safetensors weights, tokenizer, config)."""
    out = Path(path)
    tmp: Path | None = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent))
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp made it 0700: give it the mode a plain mkdir would
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except Exception as exc:
        written = _tree_size(tmp)
        _remove(tmp)
        err = disk_error(exc)
        if err is not None:
            line = disk_error_line(err, out)
            if written:
                cause, advice = line.split("; ", 1)
                line = f"{cause} ({human_size(written)} of it written before the failure); {advice}"
            raise NeurospecError(line) from None
        raise
    finally:
        _remove(tmp)


def _tree_size(path: Path | None) -> int:
    if path is None or not path.is_dir():
        return 0
    total = 0
    for p in path.rglob("*"):
        try:
            if p.is_file():
                total += p.stat().st_size
        except OSError:
            pass
    return total


def check_writable(paths: Iterable[str | os.PathLike]) -> None:
    """Before a run's jobs start: every folder that ``paths`` (outputs, logs) go into must be writable.

    A folder that does not exist yet is checked at its nearest existing parent (the one it will be
    made in). The first that is not writable (a read-only file system, no write permission) is a
    NeurospecError naming it and how many of the paths go there, so that a run is refused before
    any job runs (Snakemake itself, removing a job's old outputs, would fail with a traceback on a
    read-only file system)."""
    by_dir: dict[Path, list[str]] = {}
    for p in paths:
        by_dir.setdefault(Path(p).parent, []).append(str(p))
    checked: dict[Path, bool] = {}
    for directory, members in by_dir.items():
        where = directory
        while not where.exists() and where != where.parent:
            where = where.parent
        if where not in checked:
            checked[where] = os.access(where, os.W_OK)
        if checked[where]:
            continue
        try:
            read_only = bool(os.statvfs(where).f_flag & os.ST_RDONLY)
        except OSError:
            read_only = False
        code = errno.EROFS if read_only else errno.EACCES
        n = sum(len(m) for d, m in by_dir.items() if d == where or where in d.parents)
        line = disk_error_line(OSError(code, os.strerror(code), str(where)), where)
        cause, advice = line.split("; ", 1)
        raise NeurospecError(f"{cause} ({n} output or log file(s) of this run go there, e.g. {members[0]}); "
                             f"{advice}")
