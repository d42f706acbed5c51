"""Configuration: PDK and base-array YAML, loaded strictly, with every problem reported."""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path

from taalasc.config.base_array import BaseArray, base_array_from_mapping
from taalasc.config.pdk import Pdk, load_pdk_file
from taalasc.config.yamlio import load_yaml_file
from taalasc.errors import ConfigError

__all__ = ["BaseArray", "Pdk", "builtin_names", "load_base_array", "load_pdk", "resolve_base_path",
           "DEFAULT_BASE"]

DEFAULT_BASE = "sky130-demo"


def _builtin_dir(kind: str) -> Path:
    package = {"pdk": "taalasc.pdk_configs", "base": "taalasc.base_array"}[kind]
    return Path(str(resources.files(package)))


def builtin_names(kind: str) -> list[str]:
    """Names of the YAML files shipped with taalasc: kind is 'pdk' or 'base'."""
    return sorted(p.stem for p in _builtin_dir(kind).glob("*.yaml"))


def _resolve(kind: str, name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    candidate = Path(text)
    if text.endswith((".yaml", ".yml")) or candidate.parent != Path("."):
        if not candidate.exists():  # a FIFO or device is refused by the reader, by name
            raise ConfigError(text, ["no such file"])
        return candidate
    builtin = _builtin_dir(kind) / f"{text}.yaml"
    if builtin.is_file():
        return builtin
    names = builtin_names(kind)
    hint = difflib.get_close_matches(text, names, n=1)
    label = {"pdk": "PDK", "base": "base array"}[kind]
    extra = f" (did you mean {hint[0]!r}?)" if hint else ""
    raise ConfigError(text, [f"unknown {label} {text!r}{extra}; built-in: {', '.join(names)}"])


def load_pdk(name_or_path: str | Path) -> Pdk:
    """A PDK by built-in name (``sky130``) or YAML path."""
    return load_pdk_file(_resolve("pdk", name_or_path))


def resolve_base_path(name_or_path: str | Path) -> Path:
    """The YAML file a base-array name or path stands for, without reading it."""
    return _resolve("base", name_or_path)


def load_base_array(name_or_path: str | Path | BaseArray = DEFAULT_BASE) -> BaseArray:
    """A base array by built-in name (``sky130-demo``) or YAML path, with its PDK loaded;
    a BaseArray already loaded (perhaps changed with dataclasses.replace) as it is."""
    if isinstance(name_or_path, BaseArray):
        return name_or_path
    path = _resolve("base", name_or_path)

    def resolve_pdk(name: str, key_path: str) -> Pdk:
        if (name.endswith((".yaml", ".yml")) or "/" in name) and not Path(name).is_absolute():
            name = str(path.parent / name)  # relative to the base-array YAML, not the cwd
        try:
            pdk_path = _resolve("pdk", name)
        except ConfigError as exc:  # report it against the base array's key, where it is fixed
            raise ConfigError(str(path), [f"{key_path}: {p}" for p in exc.problems]) from None
        return load_pdk_file(pdk_path)

    return base_array_from_mapping(load_yaml_file(path), str(path), resolve_pdk)
