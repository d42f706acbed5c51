"""A small strict schema language for the YAML configs.

Each schema is a mapping of key -> Field. Validation walks the document once, collects
*every* problem with its key path (``tile_grid.columns``), rejects unknown keys with a
"did you mean" hint, and returns plain Python values. Numbers marked ``sourced`` must be
written as ``{value: X, source: "public document or repository path"}``; the source is kept
beside the value so reports can cite it.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from typing import Any, Callable

INT32_MAX = 2**31 - 1
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_identifier(text: str) -> str | None:
    """Names end up in file names and cell names: letters, digits, '.', '_' and '-' only."""
    if _IDENTIFIER.fullmatch(text):
        return None
    return f"must be 1-64 letters, digits, '.', '_' or '-' (starting with a letter or digit), not {text!r}"


@dataclass(frozen=True)
class Sourced:
    """A number with the public source it was taken from (and an optional note)."""

    value: float | int
    source: str
    note: str = ""


@dataclass(frozen=True)
class Field:
    kind: str  # "int" | "float" | "str" | "bool" | "map" | "list" | "any"
    required: bool = True
    default: Any = None
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    choices: tuple | None = None
    schema: dict[str, "Field"] | None = None  # for kind == "map"
    items: "Field | None" = None  # for kind == "list"
    sourced: bool = False  # number given as {value, source}
    doc: str = ""
    check: Callable[[Any], str | None] | None = None  # extra check, returns a problem or None


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


def _fmt(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Validator:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{path or '<top>'}: {message}")

    # -- scalars ---------------------------------------------------------------------------
    def _number(self, value: Any, f: Field, path: str) -> Any:
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**62:
            self.problem(path, f"must be at most 2**62 in size, not {_fmt(value)}")
            return None
        if f.kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                else:
                    self.problem(path, f"must be an integer, not {_type_name(value)} {_fmt(value)}")
                    return None
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                self.problem(path, f"must be a number, not {_type_name(value)} {_fmt(value)}")
                return None
            value = float(value)
            if not math.isfinite(value):
                self.problem(path, f"must be finite, not {value}")
                return None
        if f.min is not None and (value < f.min or (f.min_exclusive and value == f.min)):
            op = ">" if f.min_exclusive else "≥"
            self.problem(path, f"must be {op} {f.min:g}, not {_fmt(value)}")
            return None
        if f.max is not None and value > f.max:
            self.problem(path, f"must be ≤ {f.max:g}, not {_fmt(value)}")
            return None
        return value

    def value(self, value: Any, f: Field, path: str) -> Any:
        if f.sourced:
            if not isinstance(value, dict):
                self.problem(path, "must be written as {value: ..., source: \"...\"} "
                             f"(every number needs its public source), not {_fmt(value)}")
                return None
            inner = self.mapping(value, {
                "value": Field(f.kind, min=f.min, max=f.max, min_exclusive=f.min_exclusive),
                "source": Field("str", check=lambda s: None if s.strip() else "must not be empty"),
                "note": Field("str", required=False),
            }, path)
            if inner is None or inner.get("value") is None or inner.get("source") is None:
                return None
            return Sourced(inner["value"], inner["source"], inner.get("note") or "")
        if f.kind in ("int", "float"):
            out = self._number(value, f, path)
        elif f.kind == "str":
            if not isinstance(value, str):
                self.problem(path, f"must be a string, not {_type_name(value)} {_fmt(value)}")
                return None
            out = value
        elif f.kind == "bool":
            if not isinstance(value, bool):
                self.problem(path, f"must be true or false, not {_fmt(value)}")
                return None
            out = value
        elif f.kind == "map":
            return self.mapping(value, f.schema or {}, path)
        elif f.kind == "list":
            if not isinstance(value, list):
                self.problem(path, f"must be a list, not {_type_name(value)} {_fmt(value)}")
                return None
            assert f.items is not None
            out = [self.value(item, f.items, f"{path}[{i}]") for i, item in enumerate(value)]
            if any(item is None for item in out):
                return None
        else:
            out = value
        if out is None:
            return None
        if f.choices is not None and out not in f.choices:
            hint = difflib.get_close_matches(str(out), [str(c) for c in f.choices], n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            self.problem(path, f"must be one of {', '.join(map(str, f.choices))}, "
                         f"not {_fmt(out)}{extra}")
            return None
        if f.check is not None:
            message = f.check(out)
            if message:
                self.problem(path, message)
                return None
        return out

    # -- mappings --------------------------------------------------------------------------
    def mapping(self, data: Any, schema: dict[str, Field], path: str) -> dict | None:
        if not isinstance(data, dict):
            # A document that is not a mapping is likely not a config at all (a manifest may
            # name /etc/passwd as its base array): none of it is quoted.
            shown = f" {_fmt(data)}" if path else ""
            self.problem(path, f"must be a mapping, not {_type_name(data)}{shown}")
            return None
        out: dict[str, Any] = {}
        ok = True
        for key in data:
            if not isinstance(key, str):
                self.problem(path, f"keys must be strings, not {_fmt(key)}")
                ok = False
            elif key not in schema:
                hint = difflib.get_close_matches(key, list(schema), n=1, cutoff=0.6)
                extra = f" (did you mean {hint[0]!r}?)" if hint else ""
                sub = f"{path}.{key}" if path else key
                self.problem(sub, f"unknown key{extra}; valid keys: {', '.join(sorted(schema))}")
                ok = False
        for key, f in schema.items():
            sub = f"{path}.{key}" if path else key
            if key not in data:
                if f.required:
                    self.problem(sub, "is required" + (f" ({f.doc})" if f.doc else ""))
                    ok = False
                else:
                    out[key] = f.default
                continue
            if data[key] is None:
                if f.required:
                    self.problem(sub, "must not be null")
                    ok = False
                else:
                    out[key] = f.default
                continue
            value = self.value(data[key], f, sub)
            if value is None:
                ok = False
            out[key] = value
        return out if ok else None


def validate(data: Any, schema: dict[str, Field]) -> tuple[dict | None, list[str]]:
    """Validate ``data`` against ``schema``; return (normalized data or None, problems)."""
    v = Validator()
    out = v.mapping(data, schema, "")
    return (out if not v.problems else None), v.problems


def plain(value: Any) -> Any:
    """Strip Sourced wrappers: the plain number behind each sourced field."""
    if isinstance(value, Sourced):
        return value.value
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
