"""Which Linear layers a LoRA adapter touches: PEFT's matching rules on our tensor names.

PEFT matches ``target_modules`` against module keys of the model it wrapped: a regex string must
fullmatch the key, a list entry must equal the key or be a dotted suffix of it
(``check_target_module_exists``); ``rank_pattern``/``alpha_pattern`` keys match as
``(.*\\.)?(key)$`` (``get_pattern_key``). A checkpoint saved as LlamaModel has "layers.0..."
where the adapter (trained on LlamaForCausalLM) has "model.layers.0...", so every comparison
tries the name with and without a task wrapper prefix.
"""

from __future__ import annotations

import re
from typing import Any

from taalasc.errors import ModelError
from taalasc.model.checkpoint import Checkpoint

_WRAPPERS = ("model", "bert", "roberta", "transformer")  # task-head wrappers around the body
_EMBEDDINGS = ("embed_tokens", "word_embeddings", "position_embeddings", "token_type_embeddings",
               "wte", "wpe")


def canonical(module: str) -> str:
    """Module name without a task wrapper ("model.layers.0..." and "layers.0..." agree)."""
    head, _, rest = module.partition(".")
    return rest if rest and head in _WRAPPERS else module


def spellings(module: str) -> list[str]:
    core = canonical(module)
    return [module, core] + [f"{w}.{core}" for w in _WRAPPERS]


def matches(targets: str | list[str], module: str) -> bool:
    """PEFT's check_target_module_exists: regex fullmatch, or name / dotted-suffix match."""
    if isinstance(targets, str):
        return any(re.fullmatch(targets, s) for s in spellings(module))
    return any(module == t or module.endswith("." + t) for t in targets) or \
        any(canonical(module) == t for t in targets)


def pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    """PEFT's get_pattern_key: the first pattern p with (.*\\.)?(p)$ matching the module."""
    for key, value in patterns.items():
        if any(re.match(rf"(.*\.)?({key})$", s) for s in spellings(module)):
            return value
    return default


def linear_modules(shapes: dict[str, tuple[int, ...]]) -> dict[str, str]:
    """Module name -> weight name of every Linear a LoRA may adapt, from tensor shapes.

    A Linear is a 2-D ``.weight``; embeddings and lm_head (the output layer) are excluded,
    as PEFT's "all-linear" excludes the output layer.
    """
    out = {}
    for name, shape in shapes.items():
        module = name[: -len(".weight")]
        if (len(shape) == 2 and name.endswith(".weight") and canonical(module) != "lm_head"
                and module.rsplit(".", 1)[-1] not in _EMBEDDINGS):
            out[module] = name
    return out


Targets = str | list[str] | tuple[str, ...]  # "all-linear", a regex, or module names


def select_targets(linears: dict[str, str], targets: Targets) -> set[str]:
    """Weight names of the Linears that ``targets`` selects ("all-linear", regex or names)."""
    if targets == "all-linear":
        return set(linears.values())
    sel = targets if isinstance(targets, str) else list(targets)
    return {w for m, w in linears.items() if matches(sel, m)}


def target_shapes(ckpt: Checkpoint, targets: Targets = ("q_proj", "v_proj")
                  ) -> dict[str, tuple[int, int]]:
    """Weight name -> (out, in) of the Linears that ``targets`` selects (PEFT matching rules).

    The default is PEFT's default for Llama; with a rank this sizes an adapter (``lora_fits``)
    from the checkpoint's headers alone.
    """
    shapes = {n: t.shape for n, t in ckpt.tensors.items()}
    names = select_targets(linear_modules(shapes), targets)
    out = {n: tuple(t.shape) for n, t in ckpt.tensors.items() if n in names}
    if not out:
        raise ModelError(f"{ckpt.path}: LoRA targets {targets!r} match no Linear layer")
    return out  # type: ignore[return-value]
