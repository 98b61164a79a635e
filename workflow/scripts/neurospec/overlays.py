"""Config overlays from the command line: typed ``--config`` values and the lone ``--configfile``.

Snakemake parses a top-level ``--config key=value`` into a number or a boolean, but a nested value
(``--config 'scoring={k: 20}'``) with YAML's base loader, which keeps every scalar a string: the
schema then refuses ``'20'``. ``coerce`` converts such strings by the schema's own type where that
is unambiguous (the schema allows no string there, and the text reads as exactly one allowed type),
before validation; a string the schema allows as a string is never touched.

A ``--configfile`` is complete on its own (the demo config is not read under it); a file that holds
only a few changed keys lacks ``pairs``: ``check_overlay`` says to give config/config.yaml first.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import NeurospecError

_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^[+-]?(inf|\.inf)$", re.IGNORECASE)
_BOOLS = {"true": True, "false": False}
_NULLS = ("null", "~", "none")


def _types(schema: Mapping[str, Any]) -> set[str]:
    t = schema.get("type")
    if t is None:
        return set()
    return {t} if isinstance(t, str) else set(t)


def _readings(text: str) -> list[Any]:
    """The non-string values ``text`` can be read as (YAML 1.2 core schema, case-insensitive)."""
    low = text.strip().lower()
    out: list[Any] = []
    if _INT.match(low):
        out.append(int(low))
    elif _FLOAT.match(low):
        out.append(float(low.replace(".inf", "inf")))
    if low in _BOOLS:
        out.append(_BOOLS[low])
    if low in _NULLS:
        out.append(None)
    return out


def _allowed(value: Any, types: set[str], enum: Sequence[Any] | None) -> bool:
    if enum is not None:
        return any(value == e and type(value) is type(e) for e in enum)
    if value is None:
        return "null" in types
    if isinstance(value, bool):
        return "boolean" in types
    if isinstance(value, int):
        return bool(types & {"integer", "number"})
    if isinstance(value, float):
        return "number" in types or ("integer" in types and value.is_integer())
    return False


def _scalar(value: str, schema: Mapping[str, Any]) -> Any:
    types = _types(schema)
    enum = schema.get("enum")
    if "string" in types or (enum is not None and value in enum):
        return value
    if not types and enum is None:
        return value
    fits = [v for v in _readings(value) if _allowed(v, types, enum)]
    if len(fits) != 1:
        return value  # not unambiguous: the schema's own error names it
    v = fits[0]
    if isinstance(v, float) and "integer" in types and "number" not in types:
        v = int(v)
    return v


def _branches(value: Any, schema: Mapping[str, Any]) -> Any:
    """A value under ``oneOf``/``anyOf``: a list or mapping goes through the one branch of its shape
    (array / object); a string is kept where a branch allows it as a string, else converted where
    exactly one reading fits the branches (``residual_alphas: null | [numbers]``: "null" or ["1", "3"])."""
    branches = [b for b in schema.get("oneOf") or schema.get("anyOf") or () if isinstance(b, Mapping)]
    if isinstance(value, (list, Mapping)):
        shape = "array" if isinstance(value, list) else "object"
        fits = [b for b in branches if shape in _types(b)]
        return coerce(value, fits[0]) if len(fits) == 1 else value
    if not isinstance(value, str):
        return value
    if any("string" in _types(b) or (b.get("enum") is not None and value in b["enum"]) for b in branches):
        return value
    readings = {(type(v), v) for v in (_scalar(value, b) for b in branches) if not isinstance(v, str)}
    return next(iter(readings))[1] if len(readings) == 1 else value


def coerce(value: Any, schema: Mapping[str, Any]) -> Any:
    """``value`` with every string the schema types as a number, integer, boolean or null converted
    (recursively through objects' properties and additionalProperties, arrays' items, and the
    branches of ``oneOf``/``anyOf``)."""
    if "oneOf" in schema or "anyOf" in schema:
        return _branches(value, schema)
    if isinstance(value, str):
        return _scalar(value, schema)
    if isinstance(value, Mapping):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        out = {}
        for key, item in value.items():
            sub = props.get(key, extra if isinstance(extra, Mapping) else None)
            out[key] = coerce(item, sub) if sub else item
        return out
    if isinstance(value, list):
        items = schema.get("items")
        return [coerce(v, items) for v in value] if isinstance(items, Mapping) else value
    return value


def shown_path(path: str | os.PathLike, cwd: str | os.PathLike | None = None) -> str:
    """``path`` as the user would type it: relative to ``cwd`` (default: this directory) when under it
    (Snakemake hands over --configfile paths made absolute)."""
    try:
        return str(Path(path).resolve().relative_to(Path(cwd or os.getcwd()).resolve()))
    except ValueError:
        return str(path)


def check_overlay(config: Mapping[str, Any], configfiles: Sequence[str], required: Sequence[str] = ("pairs",),
                  cwd: str | os.PathLike | None = None) -> None:
    """A ``--configfile`` (or several) lacking a required key: one line telling to put
    config/config.yaml first (a configfile replaces the demo config; it is not laid over it)."""
    missing = [key for key in required if key not in config]
    if not missing or not configfiles:
        return
    given = " ".join(shown_path(f, cwd) for f in configfiles)
    raise NeurospecError(
        f"key {missing[0]!r} is missing from --configfile {given}: a --configfile replaces config/config.yaml "
        f"(it is not laid over it); to change a few keys, give config/config.yaml first: "
        f"--configfile config/config.yaml {given}")
