"""User-facing errors: one clear line naming the key, file, pair or model at fault."""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from typing import Iterator


class NeurospecError(Exception):
    """An error caused by the user's input (config, data, model), reported as one line."""


@contextmanager
def one_line_errors(log_path: str | None = None) -> Iterator[logging.Logger]:
    """Run a rule script body: log to ``log_path`` and turn a NeurospecError into one line + exit 1.

    Unexpected exceptions keep their traceback (they are bugs, not bad input) but are logged too.
    """
    logger = logging.getLogger("neurospec")
    logger.setLevel(logging.INFO)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        handlers.append(logging.FileHandler(log_path, mode="w", encoding="utf-8"))
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    for h in handlers:
        h.setFormatter(fmt)
        logger.addHandler(h)
    try:
        yield logger
    except NeurospecError as exc:
        logger.error("neurospec: error: %s", exc)
        for h in handlers:
            h.flush()
        raise SystemExit(1) from None
    except Exception:
        logger.exception("neurospec: unexpected error (a bug: please report it with this log)")
        raise
    finally:
        for h in handlers:
            logger.removeHandler(h)
            h.close()
