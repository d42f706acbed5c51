"""Build frozen dataclass records from validated config mappings.

A config section becomes a dataclass whose fields hold plain numbers, and whose
``sources`` mapping keeps the public source of every sourced number, keyed by field name.
Reports cite those sources beside the formulas that use them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, TypeVar

from taalasc.config.schema import Sourced

T = TypeVar("T")


def build(cls: type[T], data: Mapping[str, Any], **extra: Any) -> T:
    """Instantiate ``cls`` from ``data``, unwrapping Sourced values into ``sources``."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key, value in data.items():
        if key not in names:
            continue
        if isinstance(value, Sourced):
            values[key] = value.value
            sources[key] = value.source
        else:
            values[key] = value
    if "sources" in names:
        values["sources"] = sources
    values.update(extra)
    return cls(**values)  # type: ignore[call-arg]
