"""User-facing errors: one clear line naming the key, file, pair or model at fault."""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class NeurospecError(Exception):
    """An error caused by the user's input (config, data, model), reported as one line."""


# Disk and permission errors: the user's machine, not a bug. errno -> (cause, what to do)
DISK_ERRNOS = {
    errno.ENOSPC: ("no space left on device", "free space there (or point the run at a larger disk), then rerun"),
    errno.EDQUOT: ("disk quota exceeded", "free space within your quota (or ask for a larger one), then rerun"),
    errno.EACCES: ("permission denied", "make that directory writable by this user, or run in one you own"),
    errno.EPERM: ("operation not permitted", "make that directory writable by this user, or run in one you own"),
    errno.EROFS: ("read-only file system", "remount it read-write, or run the workflow in a writable directory"),
}


def human_size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def disk_error(exc: BaseException | None) -> OSError | None:
    """The disk or permission error (DISK_ERRNOS) behind ``exc``: itself or anywhere in its chain of
    causes and contexts (matplotlib's PNG writer turns a full disk into an AttributeError raised while
    handling the OSError); None when there is none."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
            return exc
        # errors that carry the OS error in their text only: safetensors' (Rust's "(os error 28)"), ...
        found = _ERRNO_IN_TEXT.search(str(exc))
        if found and int(found.group(1)) in DISK_ERRNOS:
            code = int(found.group(1))
            return OSError(code, os.strerror(code), getattr(exc, "filename", None))
        if "No space left on device" in str(exc):
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), getattr(exc, "filename", None))
        exc = exc.__cause__ or exc.__context__
    return None


_ERRNO_IN_TEXT = re.compile(r"(?:\(os error |\[errno )(\d+)[)\]]", re.IGNORECASE)


def disk_error_line(err: OSError, path: str | os.PathLike | None = None, needed: int | None = None) -> str:
    """One line for a disk or permission error: the path, the cause, what was needed and free, what to do."""
    cause, advice = DISK_ERRNOS[err.errno]
    target = path if path is not None else err.filename
    verb = "cannot write" if path is not None else "cannot access"
    if path is None and err.errno in (errno.EACCES, errno.EPERM):  # a read or a write: both advices
        advice = "check its permissions and its folders' (this user must read the inputs and write the outputs)"
    line = f"{verb} {target}: {cause}" if target else f"{cause} ({errno.errorcode[err.errno]}) while writing a file"
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        where = Path(target).parent if target else None
        free = None
        while where is not None and free is None:
            try:
                free = shutil.disk_usage(where).free
            except OSError:
                where = where.parent if where != where.parent else None
        amounts = []
        if needed is not None:
            amounts.append(f"{human_size(needed)} needed")
        if free is not None:
            amounts.append(f"{human_size(free)} free on {where}")
        if amounts:
            line += f" ({', '.join(amounts)})"
    return f"{line}; {advice}"


def user_error(exc: BaseException) -> str | None:
    """The one line for an exception that is the user's: a NeurospecError, or a disk or permission
    error anywhere in its chain. None for anything else (a bug, which keeps its traceback)."""
    if isinstance(exc, NeurospecError):
        return str(exc)
    err = disk_error(exc)
    return disk_error_line(err) if err is not None else None


class JobLogHandler(logging.FileHandler):
    """A job's log file. A write that fails (a full disk) is remembered, not printed as a traceback:
    ``check`` turns it into the job's one line after the task."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.failure: OSError | None = None
        try:
            super().__init__(path, mode="w", encoding="utf-8")
        except OSError as exc:
            err = disk_error(exc)
            if err is None:
                raise
            raise NeurospecError(f"log file: {disk_error_line(err, path)}") from None

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        exc = sys.exc_info()[1]
        if self.failure is None and isinstance(exc, OSError):
            self.failure = exc
        elif not isinstance(exc, OSError):
            super().handleError(record)

    def check(self) -> None:
        if self.failure is not None:
            err = disk_error(self.failure) or self.failure
            line = disk_error_line(err, self.baseFilename) if err.errno in DISK_ERRNOS else str(err)
            raise NeurospecError(f"log file: {line}")


@contextmanager
def one_line_errors(log_path: str | None = None) -> Iterator[logging.Logger]:
    """Run a rule script body: log to ``log_path`` and turn a NeurospecError into one line + exit 1.

    A disk or permission error (a full disk, a read-only results folder) is the user's too: one line.
    Unexpected exceptions keep their traceback (they are bugs, not bad input) but are logged too.
    """
    logger = logging.getLogger("neurospec")
    logger.setLevel(logging.INFO)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        try:
            handlers.append(JobLogHandler(log_path))
        except NeurospecError as exc:
            print(f"neurospec: error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    for h in handlers:
        h.setFormatter(fmt)
        logger.addHandler(h)
    try:
        yield logger
        for h in handlers:
            if isinstance(h, JobLogHandler):
                h.check()
    except Exception as exc:
        line = user_error(exc)
        if line is None:
            logger.exception("neurospec: unexpected error (a bug: please report it with this log)")
            raise
        logger.error("neurospec: error: %s", line)
        for h in handlers:
            h.flush()
        raise SystemExit(1) from None
    finally:
        for h in handlers:
            logger.removeHandler(h)
            h.close()
