"""Fuzzing the config validators: whatever the mapping, the only failure is ConfigError."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taalasc.config import load_pdk
from taalasc.config.base_array import BASE_ARRAY_SCHEMA, base_array_from_mapping
from taalasc.config.pdk import PDK_SCHEMA, pdk_from_mapping
from taalasc.config.yamlio import load_yaml_text
from taalasc.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
RAW_PDK = yaml.safe_load((ROOT / "pdk_configs" / "sky130.yaml").read_text(encoding="utf-8"))
RAW_BASE = yaml.safe_load((ROOT / "base_array" / "sky130-demo.yaml").read_text(encoding="utf-8"))
SKY130 = load_pdk("sky130")
FUZZ = settings(max_examples=80, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _schema_keys(schema, out):
    for key, f in schema.items():
        out.add(key)
        if f.schema:
            _schema_keys(f.schema, out)
        if f.items is not None and f.items.schema:
            _schema_keys(f.items.schema, out)
    return out


# Real key names make the random documents reach deep into the validators.
KEYS = sorted(_schema_keys(PDK_SCHEMA, _schema_keys(BASE_ARRAY_SCHEMA, {"value", "source", "note"})))
# Integers stay below 2**62 here; larger ones have their own test below.
SCALARS = (st.none() | st.booleans() | st.integers(-(2**62), 2**62)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8)
           | st.sampled_from(["tie-high-low", "kv_cache", "sky130", "estimate: x"]))
DOCS = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6) | st.integers(0, 3),
                      inner, max_size=6),
    max_leaves=40,
)


def _resolve(name, key):
    if name == "sky130":
        return SKY130
    raise ConfigError("b.yaml", [f"{key}: unknown PDK {name!r}"])


def _only_config_errors(call) -> None:
    try:
        call()
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)


@FUZZ
@given(DOCS)
def test_random_documents_only_raise_config_error_for_pdks(doc):
    _only_config_errors(lambda: pdk_from_mapping(doc, "p.yaml"))


@FUZZ
@given(DOCS)
def test_random_documents_only_raise_config_error_for_base_arrays(doc):
    _only_config_errors(lambda: base_array_from_mapping(doc, "b.yaml", _resolve))


def _paths(node, path=()):
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, path + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, path + (i,))


PDK_PATHS = [p for p in _paths(RAW_PDK) if p]
BASE_PATHS = [p for p in _paths(RAW_BASE) if p]


def _replace(doc, path, value):
    out = copy.deepcopy(doc)
    holder = out
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = value
    return out


@FUZZ
@given(st.sampled_from(PDK_PATHS), DOCS)
def test_one_mutated_leaf_of_a_valid_pdk_only_raises_config_error(path, value):
    # Starting from a valid file gets past validation into the consistency checks.
    _only_config_errors(lambda: pdk_from_mapping(_replace(RAW_PDK, path, value), "p.yaml"))


@FUZZ
@given(st.sampled_from(BASE_PATHS), DOCS)
def test_one_mutated_leaf_of_a_valid_base_array_only_raises_config_error(path, value):
    # ... and, for base arrays, into physical_problems.
    doc = _replace(RAW_BASE, path, value)
    _only_config_errors(lambda: base_array_from_mapping(doc, "b.yaml", _resolve))


@FUZZ
@given(st.text(max_size=200))
def test_random_yaml_text_only_raises_config_error(text):
    _only_config_errors(lambda: load_yaml_text(text, "t.yaml"))


# -- once-known bugs, now pinned as fixed -------------------------------------------------------
@pytest.mark.parametrize("path", [("sram", 0, "capacity_bytes"), ("tile_grid", "columns"),
                                  ("datapath", "activity_factor")])
def test_huge_integers_are_a_config_error(path):
    doc = _replace(RAW_BASE, path, 10**400)
    _only_config_errors(lambda: base_array_from_mapping(doc, "b.yaml", _resolve))


def test_deeply_nested_yaml_is_a_config_error():
    _only_config_errors(lambda: load_yaml_text("[" * 3000 + "]" * 3000, "t.yaml"))
