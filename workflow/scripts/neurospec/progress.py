"""Progress of a long task (collection, ablation, translation, steering): done / total, rate, ETA.

    progress = Progress(total=n_tokens, unit="tokens", log=logger, what="collect en-de")
    for batch in batches:
        ...
        progress.update(batch_tokens)
    progress.close()

Each line goes to the job's log (``log``, a logging.Logger: the job's log file) always, and to the
terminal of the run when it is interactive: the Snakemake process that started the run records its
terminal (``remember_terminal``, at the run's start) in NEURO_SPEC_TTY; jobs and their workers (whose
own stderr is a log file) write there. Lines are throttled: one every ``every_s`` seconds or every
``every_fraction`` of the total, whichever comes first, and one at the end.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Callable, TextIO

TTY_ENV = "NEUROSPEC_TTY"


def remember_terminal(stream: TextIO | None = None) -> str | None:
    """At the start of a run (its main process): record the run's terminal for its jobs' progress
    lines; nothing when stderr is not a terminal (a pipe, a file, a cluster job). Returns the path."""
    stream = sys.stderr if stream is None else stream
    try:
        path = os.ttyname(stream.fileno()) if stream.isatty() else None
    except (OSError, ValueError, AttributeError):
        path = None
    if path:
        os.environ[TTY_ENV] = path
    else:
        os.environ.pop(TTY_ENV, None)
    return path


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def _count(n: float) -> str:
    return f"{n:,.0f}"


def progress_line(what: str, done: float, total: float | None, unit: str, elapsed: float) -> str:
    """``collect en-de: 1,200 / 4,800 tokens (25%), 310 tokens/s, ETA 12s``."""
    rate = done / elapsed if elapsed > 0 else 0.0
    head = f"{what}: " if what else ""
    if total:
        eta = f", ETA {_duration((total - done) / rate)}" if rate > 0 and done < total else ""
        if done >= total:
            eta = f", done in {_duration(elapsed)}"
        return (f"{head}{_count(done)} / {_count(total)} {unit} ({100 * done / total:.0f}%), "
                f"{rate:,.0f} {unit}/s{eta}")
    return f"{head}{_count(done)} {unit}, {rate:,.0f} {unit}/s"


class Progress:
    """Throttled progress lines to the job's log and, when the run is interactive, its terminal."""

    def __init__(self, total: float | None, unit: str = "tokens", log: logging.Logger | None = None,
                 what: str = "", every_s: float = 10.0, every_fraction: float = 0.1,
                 clock: Callable[[], float] = time.monotonic, terminal: TextIO | None = None) -> None:
        self.total, self.unit, self.what = total, unit, what
        self.log = log if log is not None else logging.getLogger("neurospec")
        self.every_s, self.every_fraction, self.clock = every_s, every_fraction, clock
        self.start = self.last_time = clock()
        self.done = 0.0
        self.last_done = 0.0
        self.lines: list[str] = []  # every line written (tests, and the last one for the caller)
        self._owns_terminal = terminal is None  # the recorded terminal is opened here, and closed
        self.terminal = terminal if terminal is not None else self._open_terminal()
        self.closed = False

    @staticmethod
    def _open_terminal() -> TextIO | None:
        path = os.environ.get(TTY_ENV)
        if not path:
            return None
        try:
            return open(path, "w", encoding="utf-8", errors="replace")  # noqa: SIM115 (closed in close())
        except OSError:
            return None  # the terminal is gone (the run was detached): the log still has every line

    def _emit(self) -> None:
        now = self.clock()
        line = progress_line(self.what, self.done, self.total, self.unit, now - self.start)
        self.lines.append(line)
        self.log.info("progress: %s", line)
        if self.terminal is not None:
            try:
                self.terminal.write(f"  {line}\n")
                self.terminal.flush()
            except OSError:
                self.terminal = None
        self.last_time, self.last_done = now, self.done

    def update(self, n: float) -> None:
        """``n`` more units done; a line when ``every_s`` passed or ``every_fraction`` of the total."""
        self.done += n
        now = self.clock()
        due = now - self.last_time >= self.every_s
        if self.total:
            due = due or (self.done - self.last_done) >= self.every_fraction * self.total
        if due and (not self.total or self.done < self.total):
            self._emit()

    def close(self) -> None:
        """The last line (done in ...), once."""
        if self.closed:
            return
        self.closed = True
        self._emit()
        if self.terminal is not None and self._owns_terminal:
            try:
                self.terminal.close()
            except OSError:
                pass

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
