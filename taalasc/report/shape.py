"""What the report needs to know about a model: tensor shapes, bits per tensor, structure.

No weight is read here. Shapes come from a preset, a config.json, or a checkpoint header;
bits come from compile's quantization, or — for ``estimate`` — from the header-only policy in
``header_bits`` (default bits + glob rules + a labelled heuristic for the automatic policy).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path

from taalasc.errors import ModelError, QuantizationError

# Constants that are not quantized weights (norm vectors, biases) are stored at this width.
CONSTANT_BITS = 16
# Per-group quantization scales are stored at this width (an FP16 scale per group).
SCALE_BITS = 16

# Encoder families (bidirectional attention, no decode loop): the report gives them
# sequences/s instead of decode tokens/s and KV-cache figures.
ENCODER_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "distilbert", "electra", "mpnet")
DEFAULT_ENCODER_SEQUENCE = 128

_LAYER = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks)\.(\d+)\.")
_EXPERT = re.compile(r"\.experts\.\d+\.")

# The sequential matrix stages of one transformer layer, in dataflow order. Tensors of the
# same stage run in parallel (q/k/v; gate/up); a stage waits for the one before it.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("attn_in", ("q_proj", "k_proj", "v_proj", "qkv_proj", "attention.self.query",
                 "attention.self.key", "attention.self.value")),
    ("attn_out", ("o_proj", "attention.output.dense")),
    ("mlp_in", ("gate_proj", "up_proj", "gate_up_proj", "intermediate.dense")),
    ("mlp_out", ("down_proj", "output.dense")),
)


@dataclass(frozen=True)
class ModelShape:
    """Tensor name -> shape, the config (if any), and where they came from."""

    name: str
    tensors: dict[str, tuple[int, ...]]
    config: dict | None = None
    source: str = ""
    sensitive: tuple[str, ...] = field(default=("lm_head", "embed_tokens", "word_embeddings",
                                                "v_proj", "down_proj"), compare=False)

    @property
    def params(self) -> int:
        return sum(_numel(s) for s in self.tensors.values())

    @property
    def experts(self) -> tuple[int, int] | None:
        """(experts, experts per token) of a mixture of experts, None for a dense model."""
        from taalasc.model.presets import moe_counts

        return moe_counts(self.config or {}, self.source or self.name)

    def active_fraction(self, name: str) -> float:
        """The share of tokens a tensor works on: k/E for an expert's tensors (the router
        picks k of E experts per token), 1 for every other tensor."""
        moe = self.experts
        if moe is None or not _EXPERT.search(name):
            return 1.0
        return moe[1] / moe[0]

    @property
    def active_params(self) -> float:
        """Parameters a token touches: experts weighted by active_fraction, lookups counted."""
        return sum(_numel(s) * self.active_fraction(n) for n, s in self.tensors.items())

    def layer_of(self, name: str) -> int | None:
        m = _LAYER.search(name)
        return int(m.group(1)) if m else None

    @property
    def layers(self) -> int:
        if self.config and isinstance(self.config.get("num_hidden_layers"), int):
            return self.config["num_hidden_layers"]
        found = {self.layer_of(n) for n in self.tensors} - {None}
        return len(found)

    def kv_width(self) -> int:
        """K (= V) values stored per token per layer: kv_heads × head_dim (k_proj's out dim)."""
        for name in sorted(self.tensors):
            if name.endswith(("k_proj.weight", "attention.self.key.weight")):
                return self.tensors[name][0]
        raise ModelError(f"{self.name}: no k_proj / attention key tensor; cannot size a KV cache")

    @property
    def architecture(self) -> str:
        """'encoder' (BERT family: bidirectional, no decode loop, no KV cache) or 'decoder'.

        From the config's model_type when it names an encoder family, else from the tensor
        names (BERT's ``attention.self.key``)."""
        model_type = str((self.config or {}).get("model_type", "")).lower()
        if model_type in ENCODER_MODEL_TYPES:
            return "encoder"
        if any("attention.self.key" in n for n in self.tensors):
            return "encoder"
        return "decoder"

    def is_decoder(self) -> bool:
        return self.architecture == "decoder"

    def sequence_length(self) -> tuple[int, str]:
        """(tokens per sequence for encoder throughput, where that number comes from)."""
        value = (self.config or {}).get("max_position_embeddings")
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value, "max_position_embeddings"
        return DEFAULT_ENCODER_SEQUENCE, ("no max_position_embeddings in the config: "
                                          f"{DEFAULT_ENCODER_SEQUENCE} tokens assumed")


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def stage_of(name: str) -> str | None:
    for stage, keys in STAGES:
        if any(f".{k}." in f".{name}" for k in keys):
            return stage
    return None


# --- where shapes come from ------------------------------------------------------------------

def shape_from_config(config: dict, name: str | None = None, source: str = "config") -> ModelShape:
    from taalasc.model.presets import tensor_shapes

    shapes = tensor_shapes(config, source)
    return ModelShape(name or str(config.get("_name_or_path") or config.get("model_type")),
                      dict(sorted(shapes.items())), config, source)


def shape_from_preset(preset: str) -> ModelShape:
    from taalasc.model.presets import preset_config

    return shape_from_config(preset_config(preset), preset.lower(), f"preset {preset.lower()}")


def shape_from_config_file(path: Path) -> ModelShape:
    from taalasc.inputfile import MAX_CONFIG_BYTES, display, read_json

    path = Path(path)
    config = read_json(path, MAX_CONFIG_BYTES, "config.json")
    if not isinstance(config, dict):
        raise ModelError(f"{display(path)}: must hold a JSON object, not "
                         f"{type(config).__name__}")
    return shape_from_config(config, path.parent.name or path.stem, str(path))


def shape_from_checkpoint(path: Path) -> ModelShape:
    """Shapes from a safetensors header (single file, sharded index, or a folder)."""
    from taalasc.model import open_checkpoint  # written by the model helper

    ckpt = open_checkpoint(Path(path), numerics=False)  # sizing needs shapes, not numerics
    tensors = {n: tuple(int(d) for d in t.shape) for n, t in sorted(ckpt.tensors.items())}
    return ModelShape(Path(path).stem if Path(path).is_file() else Path(path).name,
                      tensors, ckpt.config, f"checkpoint header {path}")


# --- bits without weights ----------------------------------------------------------------------

def is_weight(name: str, shape: tuple[int, ...]) -> bool:
    """Quantized weights are the matrices; 1-D tensors (norms, biases) are constants."""
    return len(shape) >= 2


def header_bits(model: ModelShape, default_bits: int = 4, rules: list[tuple[str, int]] = (),
                auto: tuple[int, int, float] | None = None) -> tuple[dict[str, int], list[str]]:
    """Bits per weight tensor from names and shapes alone. Returns (bits, notes).

    ``rules`` are (glob, bits) pairs, the last matching rule wins. ``auto = (low, high,
    budget)`` is the HEURISTIC stand-in for the automatic policy, which needs the weights:
    everything gets ``low``; tensors known to be error-sensitive (lm_head, embeddings,
    v_proj, down_proj — HC1-style) are promoted to ``high`` in that priority order, layer by
    layer, while the average bits per weight stays within ``budget``. Rules still win.
    """
    for glob, bits in rules:
        if not 2 <= bits <= 8:
            raise QuantizationError(f"--rule {glob}={bits}: bits must be 2..8, not {bits!r}")
    if not 2 <= default_bits <= 8:
        raise QuantizationError(f"--bits must be 2..8, not {default_bits!r}")
    weights = {n: s for n, s in model.tensors.items() if is_weight(n, s)}
    bits = {n: default_bits for n in weights}
    notes: list[str] = []
    if auto is not None:
        low, high, budget = auto
        if not (2 <= low < high <= 8):
            raise QuantizationError(f"--auto: low bits must be below high bits (2..8), "
                                    f"not {low}/{high}")
        if not low <= budget <= high:
            raise QuantizationError(f"--budget must lie between {low} and {high} bits per "
                                    f"weight, not {budget!r}")
        bits = {n: low for n in weights}
        total = sum(_numel(s) for s in weights.values())
        spent = low * total
        order = sorted(weights, key=lambda n: (_priority(n, model.sensitive),
                                               model.layer_of(n) or 0, n))
        for name in order:
            if _priority(name, model.sensitive) >= len(model.sensitive):
                break
            extra = (high - low) * _numel(weights[name])
            if spent + extra <= budget * total:
                bits[name] = high
                spent += extra
        notes.append(f"bits: automatic {low}/{high}-bit policy estimated WITHOUT weights "
                     f"(heuristic: {', '.join(model.sensitive)} promoted to {high} bits within "
                     f"{budget} bits/weight); compile measures sensitivity on the real weights")
    matched = set()
    for name in weights:
        for glob, b in rules:
            if fnmatch.fnmatchcase(name, glob):
                bits[name] = b
                matched.add(glob)
    for glob, _ in rules:
        if glob not in matched:
            raise QuantizationError(f"--rule {glob}: matches no weight tensor of {model.name}")
    return dict(sorted(bits.items())), notes


def _priority(name: str, sensitive: tuple[str, ...]) -> int:
    for i, key in enumerate(sensitive):
        if key in name:
            return i
    return len(sensitive)


def normalise_bits(model: ModelShape, bits: dict) -> dict[str, tuple[int, int | None]]:
    """Accept compile's QuantSpec objects (``.bits``, ``.group_size``) or plain ints.

    Returns name -> (bits, group_size or None) for the tensors in ``bits`` (the quantized
    ones). Tensors absent from ``bits`` are stored as CONSTANT_BITS constants by the area
    model. A name that is not a tensor of the model is an error.
    """
    out: dict[str, tuple[int, int | None]] = {}
    for name, spec in sorted(bits.items()):
        if name not in model.tensors:
            raise QuantizationError(f"{name}: has a bit width but is not a tensor of {model.name}")
        if isinstance(spec, int):
            out[name] = (spec, None)
        else:
            out[name] = (int(spec.bits), getattr(spec, "group_size", None))
    return out
