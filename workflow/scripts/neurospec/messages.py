"""The words of user-facing messages: did-you-mean hints (difflib), the pair format, unknown targets,
models the hub refuses. Pure functions: the callers raise (NeurospecError) or print the line.
"""

from __future__ import annotations

import difflib
import re
from typing import Iterable, Mapping, Sequence

PAIR_FORMAT = "a pair is two language codes joined by '-', e.g. en-de"


def did_you_mean(word: str, choices: Iterable[str], cutoff: float = 0.6) -> str:
    """``"did you mean 'de'? "`` for the closest of ``choices`` (difflib), or "" when none is close."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=cutoff)
    return f"did you mean {close[0]!r}? " if close else ""


def pair_hint(pair: object) -> str:
    """A malformed pair in words: what a pair is, and the pair it probably meant (``en_de`` -> en-de)."""
    text = str(pair)
    parts = [p for p in re.split(r"[^A-Za-z]+", text) if p]
    guess = f"did you mean '{parts[0].lower()}-{parts[1].lower()}'? " if len(parts) == 2 else ""
    return f"{guess}{PAIR_FORMAT}"


# result folders whose file or folder name is a method: scores/{method}[_iou|_stability].parquet,
# ablation/{method}.parquet, translation/ablated/{method}.parquet, figures/{method}/...
_METHOD_SPOTS = (
    re.compile(r"^scores/(?P<method>[^/]+?)(?:_iou|_stability)?\.parquet$"),
    re.compile(r"^ablation/(?P<method>[^/]+?)\.parquet$"),
    re.compile(r"^translation/ablated/(?P<method>[^/]+?)\.parquet$"),
    re.compile(r"^figures/(?P<method>[^/]+)/[^/]+$"),
)


def unknown_target_line(path: str, *, results: str, methods: Sequence[str], targets: Sequence[str]) -> str:
    """The one line for a target no rule makes (instead of Snakemake's MissingRuleException): the
    method it names is not one (and the closest), or the closest target of this config, and where
    this config's results are."""
    path = str(path).strip("'\"")
    relative = path[len(results) + 1:] if path.startswith(results + "/") else None
    if relative is not None:
        for spot in _METHOD_SPOTS:
            found = spot.match(relative)
            if found and found.group("method") not in methods and found.group("method") not in (
                    "translation",):
                method = found.group("method")
                return (f"neurospec: error: no rule makes {path}: {method!r} is not a method; "
                        f"{did_you_mean(method, methods)}methods: {', '.join(methods)}")
    close = difflib.get_close_matches(path, list(targets), n=1, cutoff=0.75)
    hint = f"did you mean {close[0]}? " if close else ""
    where = "" if relative is not None else (
        f" (this config's results are under {results}/: model.name/dataset/split)")
    return (f"neurospec: error: no rule makes {path}{where}; {hint}methods: {', '.join(methods)}; "
            "`snakemake -n` lists every result of this config")
