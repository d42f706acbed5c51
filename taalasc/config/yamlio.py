"""Safe YAML reading: no code execution, no aliases (no "billion laughs"), no duplicate keys,
a size cap, and every error reported as ``file:line: message``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from taalasc.errors import ConfigError
from taalasc.inputfile import read_text

MAX_YAML_BYTES = 1 << 20  # configs are a few KiB; anything this big is not a config


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases and duplicate keys."""

    def compose_node(self, parent, index):  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.MarkedYAMLError(
                None, None, "YAML aliases (*name) are not allowed in taalasc configs",
                event.start_mark)
        return super().compose_node(parent, index)

    def construct_yaml_int(self, node):  # type: ignore[override]
        digits = len(str(node.value).lstrip("+-"))
        if digits > 100:  # Python refuses beyond 4300 digits; no config number needs 100
            raise yaml.MarkedYAMLError(None, None, f"integer of {digits} digits is too long",
                                       node.start_mark)
        return super().construct_yaml_int(node)

    def construct_mapping(self, node, deep=False):  # type: ignore[override]
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:
                raise yaml.MarkedYAMLError(None, None, "mapping keys must be plain scalars",
                                           key_node.start_mark)
            if duplicate:
                raise yaml.MarkedYAMLError(None, None, f"duplicate key {key!r}",
                                           key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_constructor("tag:yaml.org,2002:int", _StrictLoader.construct_yaml_int)


def load_yaml_text(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - _StrictLoader is a SafeLoader
    except yaml.reader.ReaderError as exc:  # e.g. a NUL byte: one line, with the position
        code = ord(exc.character) if isinstance(exc.character, str) else int(exc.character)
        char = f"unacceptable character #x{code:04x}"
        raise ConfigError(source, [f"character {exc.position}: {char} ({exc.reason})"]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}" if mark is not None else "?"
        raise ConfigError(source, [f"{where}: {exc.problem or exc.context}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, [f"not valid YAML: {exc}"]) from None
    except RecursionError:
        raise ConfigError(source, ["YAML nesting is too deep for a config"]) from None
    except ValueError as exc:  # e.g. an integer beyond Python's digit limit
        raise ConfigError(source, [f"not a valid value: {str(exc).splitlines()[0]}"]) from None


def load_yaml_file(path: Path) -> Any:
    source = str(path)
    text = read_text(path, MAX_YAML_BYTES, "YAML config",
                     lambda message: ConfigError(source, [message]))
    return load_yaml_text(text, source)
