"""Selections: the scoring methods a run makes, and named variants of their settings side by side.

A *selection* is one method with one set of parameters. ``scoring.methods`` names the methods (all
five by default); ``scoring.variants`` names partial overrides of the scoring settings::

    scoring:
      variants:
        strict: {lape: {top_rate: 0.005}}     # lape@strict beside lape
        k20: {k: 20}                          # frequency@k20 and frequency_language@k20

A variant applies to the methods whose settings it changes (``VARIANT_KEYS``): ``k`` to frequency and
frequency_language, ``rest`` to contrast and diffmeans, ``lape``/``contrast``/``diffmeans`` to that
method. Its selection is named ``<method>@<variant>``: the ``{method}`` wildcard of every rule, so
that it lands in its own files (``scores/lape@strict.parquet``, ``figures/lape@strict/...``,
``ablation/lape@strict.parquet``, ...), never in the default's. Its tables' metadata say ``method``
(the base method, which the library dispatches on) and ``variant`` (its name); ``label`` gives the
name the figures and the tables made from several selections show.
"""

from __future__ import annotations

import copy
import difflib
import re
from typing import Any, Mapping

from .errors import NeurospecError

# method -> the scoring keys its selection reads (the method's own group, k, rest)
METHOD_KEYS: dict[str, tuple[str, ...]] = {
    "frequency": ("k",),
    "frequency_language": ("k",),
    "lape": ("lape",),
    "contrast": ("contrast", "rest"),
    "diffmeans": ("diffmeans", "rest"),
}
METHOD_NAMES = tuple(METHOD_KEYS)
# the scoring keys a variant may override
VARIANT_KEYS = ("k", "rest", "lape", "contrast", "diffmeans")
SEPARATOR = "@"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")


def method_params(scoring: Mapping[str, Any], method: str) -> dict[str, Any]:
    """The parameters ``method`` is called with under the scoring settings ``scoring`` (keys sorted:
    the same values in another order must not look like a parameter change)."""
    if method in ("frequency", "frequency_language"):
        return {"k": scoring["k"]}
    params = dict(scoring[method])
    if "rest" in METHOD_KEYS[method]:
        params["rest"] = scoring["rest"]
    return dict(sorted(params.items()))


def merged(scoring: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``scoring`` with a variant's ``override`` laid over it (groups merged key by key)."""
    out = copy.deepcopy(dict(scoring))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def variant_methods(override: Mapping[str, Any], methods: list[str] | tuple[str, ...] = METHOD_NAMES) -> list[str]:
    """The methods of ``methods`` whose settings a variant's ``override`` changes, in ``methods``' order."""
    return [m for m in methods if any(key in override for key in METHOD_KEYS[m])]


def check_variants(scoring: Mapping[str, Any]) -> None:
    """Variant names and contents the schema cannot judge: one line naming the key at fault."""
    methods = list(scoring.get("methods") or METHOD_NAMES)
    for name, override in (scoring.get("variants") or {}).items():
        key = f"scoring.variants.{name}"
        if not NAME_PATTERN.match(str(name)):
            raise NeurospecError(f"key {key!r}: a variant name is letters, digits, '_' and '-' only "
                                 f"(it names files: scores/<method>{SEPARATOR}<name>.parquet)")
        if not isinstance(override, Mapping) or not override:
            raise NeurospecError(f"key {key!r}: a variant changes at least one of {', '.join(VARIANT_KEYS)} "
                                 f"(e.g. {{lape: {{top_rate: 0.005}}}})")
        for sub in override:
            if sub not in VARIANT_KEYS:
                close = difflib.get_close_matches(str(sub), VARIANT_KEYS, n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise NeurospecError(f"key '{key}.{sub}': not a setting a variant can change; {hint}"
                                     f"a variant takes: {', '.join(VARIANT_KEYS)}")
        if not variant_methods(override, methods):
            changed = ", ".join(sorted(override))
            touched = ", ".join(m for m in METHOD_NAMES if any(k in override for k in METHOD_KEYS[m]))
            raise NeurospecError(f"key {key!r}: it changes {changed}, read by {touched} only, which "
                                 f"scoring.methods ({', '.join(methods)}) leaves out")


def selections(scoring: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Every selection a run makes: ``method`` or ``method@variant`` -> its parameters.

    The configured methods first (``scoring.methods``' order), then each variant (by name) for each
    method it changes."""
    methods = list(scoring.get("methods") or METHOD_NAMES)
    out = {m: method_params(scoring, m) for m in methods}
    for name in sorted(scoring.get("variants") or {}):
        override = scoring["variants"][name]
        settings = merged(scoring, override)
        for method in variant_methods(override, methods):
            out[f"{method}{SEPARATOR}{name}"] = method_params(settings, method)
    return out


def split(selection: str) -> tuple[str, str | None]:
    """``lape@strict`` -> ("lape", "strict"); ``lape`` -> ("lape", None)."""
    method, sep, variant = selection.partition(SEPARATOR)
    return method, (variant if sep else None)


def base_method(selection: str) -> str:
    return split(selection)[0]


def label(meta: Mapping[str, Any]) -> str:
    """The name of a table's selection from its metadata: ``method``, or ``method@variant``."""
    method = str(meta.get("method", "?"))
    variant = meta.get("variant")
    return f"{method}{SEPARATOR}{variant}" if variant else method


def _leaves(override: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, value in override.items():
        if isinstance(value, Mapping):
            out += _leaves(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={value}")
    return out


def describe(selection: str, scoring: Mapping[str, Any]) -> str:
    """A selection's name for the report: the method alone, or the variant with what it changes,
    e.g. ``lape@strict (lape.top_rate=0.005)``."""
    method, variant = split(selection)
    if variant is None:
        return method
    override = (scoring.get("variants") or {}).get(variant) or {}
    keys = [k for k in METHOD_KEYS[method] if k in override]
    return f"{selection} ({', '.join(_leaves({k: override[k] for k in keys}))})"


def wildcard_pattern(names) -> str:
    """The ``{method}`` wildcard's constraint: exactly one of ``names``."""
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
