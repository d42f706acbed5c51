"""Reading, validating and writing PEFT LoRA adapter folders.

A folder holds ``adapter_config.json`` and ``adapter_model.safetensors`` with, for every
adapted Linear ``X``, ``base_model.model.X.lora_A.weight`` [r, in] and
``base_model.model.X.lora_B.weight`` [out, r] (PEFT ``get_peft_model_state_dict`` drops the
adapter name). scaling = lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora (PEFT
``LoraLayer.update_layer``); ``rank_pattern``/``alpha_pattern`` override r and alpha per module.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from taalasc.errors import ModelError
from taalasc.inputfile import MAX_CONFIG_BYTES, read_json
from taalasc.lora.adapter import ADAPTER_DTYPES, LoraAdapter, LoraPair
from taalasc.lora.targets import (PATTERN_KEY, linear_modules, matches, pattern_value,
                                  regex_problem, select_targets, spellings)
from taalasc.model import arch
from taalasc.model.checkpoint import Checkpoint
from taalasc.model.safetensors_io import Header, read_header, read_tensor

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
_PREFIX = "base_model.model."
_KEY_RE = re.compile(r"^(?P<module>.+)\.(?P<which>lora_A|lora_B)\.weight$")
# PEFT's TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING, for target_modules: null
_DEFAULT_TARGETS = {"llama": ["q_proj", "v_proj"], "bert": ["query", "value"]}


def _err(where: Path, text: str) -> ModelError:
    return ModelError(f"{where}: {text}")


def read_adapter_files(adapter_dir: str | Path) -> tuple[dict[str, Any], Header]:
    """adapter_config.json (parsed, checked for supported options) and the weights' header.

    Reads headers only: enough for ``estimate`` to size the adapter without the base model.
    """
    folder = Path(adapter_dir)
    if not folder.is_dir():
        raise _err(folder, "a LoRA adapter must be a folder holding adapter_config.json and "
                           "adapter_model.safetensors")
    cfg_path = folder / CONFIG_NAME
    if not cfg_path.exists():  # a FIFO or device is refused by read_json, by name
        raise _err(cfg_path, "missing: a PEFT adapter folder needs adapter_config.json")
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        hint = " (adapter_model.bin is a pickle; re-save with safe_serialization=True)" \
            if (folder / "adapter_model.bin").is_file() else ""
        raise _err(weights, f"missing: a PEFT adapter folder needs {WEIGHTS_NAME}{hint}")
    config = read_json(cfg_path, MAX_CONFIG_BYTES, "adapter config")
    if not isinstance(config, dict):
        raise _err(cfg_path, f"must be a JSON object, not {type(config).__name__}")
    _check_config(config, cfg_path)
    return config, read_header(weights)


def adapter_sram_bytes(adapter_dir: str | Path) -> tuple[int, str]:
    """(bytes to hold every A and B at the stored precision, dtype), from the headers alone.

    For ``estimate``/reports without the base model; ``load_lora(...).sram_bytes()`` agrees.
    """
    _, header = read_adapter_files(adapter_dir)
    halves, dtype = _pairs_in_file(header)
    values = sum(i.numel for h in halves.values() for i in h.values())
    return values * ADAPTER_DTYPES[dtype], dtype


def _check_config(cfg: dict[str, Any], src: Path) -> None:
    if cfg.get("peft_type") != "LORA":
        raise _err(src, f"peft_type must be 'LORA', not {cfg.get('peft_type')!r}")
    r = cfg.get("r")
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise _err(src, f"r must be a positive integer, not {r!r}")
    alpha = cfg.get("lora_alpha", 8)
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not math.isfinite(alpha):
        raise _err(src, f"lora_alpha must be a finite number, not {alpha!r}")
    for key in ("target_modules", "exclude_modules"):
        targets = cfg.get(key)
        if not (targets is None or isinstance(targets, str)
                or (isinstance(targets, list) and all(isinstance(t, str) for t in targets))):
            raise _err(src, f"{key} must be a list of names or a regex string, not "
                            f"{_short(targets)}")
        problem = regex_problem(targets) if isinstance(targets, str) else None
        if problem:
            raise _err(src, f"{key} {_short(targets)} {problem}")
    layers = cfg.get("layers_to_transform")
    if not (layers is None or _is_index(layers)
            or (isinstance(layers, list) and all(_is_index(i) for i in layers))):
        raise _err(src, f"layers_to_transform must be a layer index or a list of them, not "
                        f"{_short(layers)}")
    # Options the chip's add-on path does not implement: refuse rather than compute wrongly.
    if cfg.get("fan_in_fan_out"):
        raise _err(src, "fan_in_fan_out must be false (it is for GPT-2 Conv1D; our targets "
                        "are Linear layers), not True")
    if cfg.get("bias", "none") != "none":
        raise _err(src, f"bias must be 'none' (trained biases would change the printed "
                        f"weights), not {cfg.get('bias')!r}")
    for key, what in (("use_dora", "DoRA"), ("lora_bias", "a LoRA bias"),
                      ("modules_to_save", "fully retrained modules"),
                      ("layer_replication", "layer replication"),
                      ("trainable_token_indices", "retrained token embeddings")):
        if cfg.get(key):
            raise _err(src, f"{key} must be empty or false ({what} is not supported on a "
                            f"printed chip), not {cfg[key]!r}")
    for key in ("rank_pattern", "alpha_pattern"):
        pattern = cfg.get(key) or {}
        if not isinstance(pattern, dict) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
                and (key == "alpha_pattern" or isinstance(v, int)) for v in pattern.values()):
            raise _err(src, f"{key} must map module patterns to positive "
                            f"{'numbers' if key == 'alpha_pattern' else 'integers'}, "
                            f"not {_short(cfg[key])}")
        for module in pattern:  # matched as PEFT does, inside (.*\.)?(KEY)$
            problem = regex_problem(module) or regex_problem(PATTERN_KEY.format(module))
            if problem:
                raise _err(src, f"{key} key {_short(module)} {problem}")


def _is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _resolve(module: str, ckpt: Checkpoint, key: str, src: str) -> str:
    """The base weight that the adapter module modifies, tolerant of a wrapper prefix."""
    found = [s + ".weight" for s in dict.fromkeys(spellings(module))
             if s + ".weight" in ckpt.tensors]
    if len(found) != 1:
        why = "is not in the model" if not found else f"is ambiguous ({', '.join(found)})"
        raise ModelError(f"{src}: tensor {key!r}: target {module + '.weight'!r} {why} "
                         f"({ckpt.path})")
    return found[0]


def _pairs_in_file(header: Header) -> tuple[dict[str, dict[str, Any]], str]:
    """module -> {"lora_A": info, "lora_B": info} from the adapter's header, and its dtype."""
    src = header.file
    halves: dict[str, dict[str, Any]] = {}
    for key, info in header.tensors.items():
        m = _KEY_RE.match(key[len(_PREFIX):] if key.startswith(_PREFIX) else key)
        if m is None:
            raise ModelError(f"{src}: tensor {key!r} is not a LoRA weight (expected "
                             f"{_PREFIX}<module>.lora_A.weight or .lora_B.weight)")
        if info.dtype not in ADAPTER_DTYPES:
            raise ModelError(f"{src}: tensor {key!r} dtype must be one of "
                             f"{', '.join(ADAPTER_DTYPES)}, not {info.dtype!r}")
        if len(info.shape) != 2:
            raise ModelError(f"{src}: tensor {key!r} must be 2-D, not shape {list(info.shape)}")
        halves.setdefault(m["module"], {})[m["which"]] = info
    if not halves:
        raise ModelError(f"{src}: adapter holds no lora_A/lora_B tensors")
    dtypes = sorted({i.dtype for h in halves.values() for i in h.values()})
    if len(dtypes) != 1:
        raise ModelError(f"{src}: all LoRA tensors must share one dtype, not {dtypes}")
    return halves, dtypes[0]


def _expected_targets(cfg: dict[str, Any], ckpt: Checkpoint, cfg_path: Path
                      ) -> tuple[str | list[str], set[str]]:
    """(target_modules, weight names they select): PEFT's rules incl. exclude_modules and
    layers_to_transform; a null target_modules takes PEFT's default for the family."""
    targets = cfg.get("target_modules")
    if targets is None:
        targets = _DEFAULT_TARGETS.get(ckpt.architecture)
        if targets is None:
            raise _err(cfg_path, f"target_modules must be given for a {ckpt.architecture} "
                                 "model, not None")
    shapes = {n: t.shape for n, t in ckpt.tensors.items()}
    expected = select_targets(linear_modules(shapes), targets)
    if cfg.get("exclude_modules"):
        expected = {w for w in expected
                    if not matches(cfg["exclude_modules"], w[: -len(".weight")])}
    layers = cfg.get("layers_to_transform")
    if layers is not None:
        keep = {layers} if isinstance(layers, int) else set(layers)
        expected = {w for w in expected if arch.layer_of(w) in keep}
    if not expected:
        raise _err(cfg_path, f"target_modules {targets!r} match no Linear layer of the model "
                             f"{ckpt.path}")
    return targets, expected


def load_lora(adapter_dir: str | Path, ckpt: Checkpoint) -> LoraAdapter:
    """Read and validate a PEFT LoRA adapter against the base checkpoint ``ckpt``.

    Every target must exist in the model with A [r, in_features] and B [out_features, r], r must
    agree with the config (or its rank_pattern), every module the config targets must have its
    pair and every pair must be targeted, and all of A and B share one float dtype.
    """
    folder = Path(adapter_dir)
    cfg, header = read_adapter_files(folder)
    src = header.file
    r, alpha = int(cfg["r"]), float(cfg.get("lora_alpha", 8))
    rslora = bool(cfg.get("use_rslora", False))
    rank_pattern, alpha_pattern = cfg.get("rank_pattern") or {}, cfg.get("alpha_pattern") or {}

    halves, dtype = _pairs_in_file(header)
    targets, expected = _expected_targets(cfg, ckpt, folder / CONFIG_NAME)
    pairs: dict[str, LoraPair] = {}
    for module in sorted(halves, key=arch.natural_key):
        half = halves[module]
        for which in ("lora_A", "lora_B"):
            if which not in half:
                other = "lora_B" if which == "lora_A" else "lora_A"
                raise ModelError(f"{src}: tensor {_PREFIX}{module}.{other}.weight has no "
                                 f"matching {which}.weight")
        a_info, b_info = half["lora_A"], half["lora_B"]
        target = _resolve(module, ckpt, a_info.name, src)
        if target not in expected:
            raise ModelError(f"{src}: tensor {a_info.name!r} adapts {target!r}, which "
                             f"target_modules {targets!r} does not select")
        out_f, in_f = ckpt.tensors[target].shape
        want_r = pattern_value(rank_pattern, module, r)
        if a_info.shape[1] != in_f:
            raise ModelError(f"{src}: tensor {a_info.name!r} shape must be [r, in_features="
                             f"{in_f}] for {target}, not {list(a_info.shape)}")
        if b_info.shape[0] != out_f:
            raise ModelError(f"{src}: tensor {b_info.name!r} shape must be [out_features="
                             f"{out_f}, r] for {target}, not {list(b_info.shape)}")
        for info, got in ((a_info, a_info.shape[0]), (b_info, b_info.shape[1])):
            if got != want_r:
                how = "rank_pattern" if want_r != r else "r"
                raise ModelError(f"{src}: tensor {info.name!r} has rank {got}, but "
                                 f"{CONFIG_NAME} {how} says {want_r}")
        mod_alpha = float(pattern_value(alpha_pattern, module, alpha))
        scale = mod_alpha / math.sqrt(want_r) if rslora else mod_alpha / want_r
        pairs[target] = LoraPair(target=target, A=read_tensor(a_info), B=read_tensor(b_info),
                                 scaling=scale)
    missing = sorted(expected - set(pairs), key=arch.natural_key)
    if missing:
        raise ModelError(f"{src}: target_modules {targets!r} select {missing[0]!r} but the "
                         f"adapter has no lora_A/lora_B for it ({len(missing)} missing)")

    order = [n for n in ckpt.tensors if n in pairs]
    return LoraAdapter(path=folder, rank=r, alpha=alpha,
                       scaling=alpha / math.sqrt(r) if rslora else alpha / r, dtype=dtype,
                       pairs={n: pairs[n] for n in order},
                       base_model=cfg.get("base_model_name_or_path"))


def write_peft_adapter(out_dir: str | Path, ckpt_or_config: Checkpoint | dict, rank: int = 4,
                       alpha: float = 8, targets: tuple[str, ...] | str = ("q_proj", "v_proj"),
                       dtype: str = "F32", seed: int = 0, use_rslora: bool = False,
                       config_overrides: dict[str, Any] | None = None) -> Path:
    """A deterministic synthetic adapter in PEFT's layout; returns the folder.

    ``ckpt_or_config`` is an open Checkpoint or a llama_config()/bert_config() dict. A and B
    are N(0, 1/in) and N(0, 1/r) draws (B is not zero, unlike PEFT's init, so that the
    adapter changes the output). ``config_overrides`` replaces adapter_config.json fields
    (for tests of invalid adapters). Same arguments -> same bytes.
    """
    from taalasc.model import synth

    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise ModelError(f"rank must be a positive integer, not {rank!r}")
    if dtype not in ADAPTER_DTYPES:
        raise ModelError(f"dtype must be one of {', '.join(ADAPTER_DTYPES)}, not {dtype!r}")
    if isinstance(ckpt_or_config, Checkpoint):
        shapes = {n: t.shape for n, t in ckpt_or_config.tensors.items()}
        model_type = ckpt_or_config.architecture
    else:
        model_type = ckpt_or_config.get("model_type", "llama")
        shapes = (synth.bert_shapes if model_type == "bert" else synth.llama_shapes)(
            ckpt_or_config)
    chosen = select_targets(linear_modules(shapes), targets)
    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {}
    family = model_type if model_type in ("llama", "bert") else "generic"
    for name in arch.dataflow_order(chosen, family):
        (out_f, in_f), module = shapes[name], name[: -len(".weight")]
        tensors[f"{_PREFIX}{module}.lora_A.weight"] = (
            rng.standard_normal((rank, in_f), dtype=np.float32) / np.float32(math.sqrt(in_f)))
        tensors[f"{_PREFIX}{module}.lora_B.weight"] = (
            rng.standard_normal((out_f, rank), dtype=np.float32) / np.float32(math.sqrt(rank)))
    if not tensors:
        raise ModelError(f"write_peft_adapter: targets {targets!r} match no Linear layer")
    config = {
        "alpha_pattern": {}, "base_model_name_or_path": None, "bias": "none",
        "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
        "layers_to_transform": None, "lora_alpha": alpha, "lora_dropout": 0.0,
        "modules_to_save": None, "peft_type": "LORA", "r": rank, "rank_pattern": {},
        "target_modules": targets if isinstance(targets, str) else sorted(targets),
        "task_type": "CAUSAL_LM" if model_type != "bert" else "FEATURE_EXTRACTION",
        "use_dora": False, "use_rslora": use_rslora,
    }
    config.update(config_overrides or {})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    synth.write_safetensors(out / WEIGHTS_NAME, tensors, dtype)
    return out
