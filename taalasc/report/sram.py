"""SRAM: KV-cache size per token and per user, context that fits, LoRA adapter fit.

KV bytes per token = 2 (K and V) × layers × kv_width × kv_bits / 8, with kv_width =
num_key_value_heads × head_dim (k_proj's output rows) and kv_bits = the datapath's
activation_bits. Capacity is the base array's kv_cache SRAM on every die the model uses.
LoRA: rank r on a module [out, in] adds r·(in + out) parameters, stored at 16 bits.
Encoders (BERT family) keep no KV cache between requests; their attention needs the K and V
of the whole sequence instead: 2 × layers × kv_width × L × kv_bits / 8 bytes per sequence in
flight (L = max_position_embeddings, else 128), held in the kv_cache SRAM.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from taalasc.errors import ModelError
from taalasc.inputfile import MAX_CONFIG_BYTES, read_json
from taalasc.model.safetensors_io import read_header
from taalasc.report.metrics import Metric, assumed, from_base, from_metric, from_model
from taalasc.report.shape import ModelShape

LORA_BITS = 16
DEFAULT_LORA_TARGETS = ("q_proj", "v_proj")  # PEFT's default for Llama-family models


@dataclass(frozen=True)
class Lora:
    """A LoRA adapter: exact parameter count (from its file) or rank + target modules."""

    params: int
    source: str


def lora_from_rank(model: ModelShape, rank: int,
                   targets: tuple[str, ...] = DEFAULT_LORA_TARGETS) -> Lora:
    if rank <= 0:
        raise ModelError(f"--lora-rank must be a positive integer, not {rank!r}")
    params = 0
    for name, shape in model.tensors.items():
        if len(shape) == 2 and any(f".{t}." in name for t in targets):
            params += rank * (shape[0] + shape[1])
    if params == 0:
        raise ModelError(f"--lora-rank: no tensor of {model.name} matches the LoRA target "
                         f"modules {', '.join(targets)}")
    return Lora(params, f"rank {rank} on {', '.join(targets)}")


def lora_from_adapter(path: Path) -> Lora:
    """A PEFT adapter folder: adapter_config.json + adapter_model.safetensors (header only)."""
    path = Path(path)
    cfg_path = path / "adapter_config.json"
    tensors = path / "adapter_model.safetensors"
    if not cfg_path.exists() or not tensors.is_file():
        raise ModelError(f"{path}: a LoRA adapter folder needs adapter_config.json and "
                         "adapter_model.safetensors")
    cfg = read_json(cfg_path, MAX_CONFIG_BYTES, "adapter config")
    if not isinstance(cfg, dict):
        raise ModelError(f"{cfg_path}: must hold a JSON object")
    params = sum(t.numel for t in read_header(tensors).tensors.values())
    return Lora(params, f"{path} (r={cfg.get('r')}, targets={cfg.get('target_modules')})")


def sram_metrics(model: ModelShape, base, got: dict[str, Metric], users: int, context: int,
                 lora: Lora | None) -> list[Metric]:
    M: list[Metric] = []

    def add(*args, **kw) -> Metric:
        M.append(Metric(*args, **kw))
        return M[-1]

    dies = got["design__die__count"]
    a_bits = from_base(base, "datapath.activation_bits")
    try:
        kv_width = model.kv_width()
    except ModelError:
        kv_width = 0  # no attention key tensor: nothing to cache
    per_die = sum(b.capacity_bytes for b in base.sram if b.purpose == "kv_cache")
    if not model.is_decoder():
        _attention_buffer(model, base, add, dies, a_bits, kv_width, per_die)
    else:
        _kv_cache(model, base, add, dies, a_bits, kv_width, per_die, users, context)
    _lora(base, add, dies, lora)
    return M


def _attention_buffer(model: ModelShape, base, add, dies: Metric, a_bits, kv_width: int,
                      per_die: int) -> None:
    """Encoders: K and V of one whole sequence per layer, in the kv_cache SRAM."""
    seq, seq_source = model.sequence_length()
    need = add("sram__attention__bytes_per_sequence",
               2 * model.layers * kv_width * seq * a_bits[0] / 8, "B",
               "2 × layers × kv_heads·head_dim × sequence_length × kv_bits / 8",
               {"layers": from_model(model.layers, "num_hidden_layers"),
                "kv_heads·head_dim": from_model(kv_width, "attention key output rows"),
                "sequence_length": from_model(seq, seq_source),
                "kv_bits": assumed(a_bits[0], "K and V stored at datapath.activation_bits")},
               higher_is_better=False,
               description="bidirectional attention: every token reads every position")
    cap = add("sram__attention__capacity_bytes", per_die * dies.value, "B",
              "kv_cache SRAM per die × design__die__count",
              {"kv_cache_bytes_per_die": (per_die, f"base array {base.name}: sram[purpose="
                                          "kv_cache].capacity_bytes"),
               "design__die__count": from_metric(dies)}, higher_is_better=True)
    add("sram__attention__fits", need.value <= cap.value, "",
        "sram__attention__bytes_per_sequence ≤ sram__attention__capacity_bytes",
        {"sram__attention__bytes_per_sequence": from_metric(need),
         "sram__attention__capacity_bytes": from_metric(cap)}, higher_is_better=True)


def _kv_cache(model: ModelShape, base, add, dies: Metric, a_bits, kv_width: int, per_die: int,
              users: int, context: int) -> None:
    """Decoders: the KV cache of every user's past tokens."""
    bpt = add("sram__kv_cache__bytes_per_token", 2 * model.layers * kv_width * a_bits[0] / 8,
              "B", "2 × layers × kv_heads·head_dim × kv_bits / 8",
              {"layers": from_model(model.layers, "num_hidden_layers"),
               "kv_heads·head_dim": from_model(kv_width, "k_proj output rows"),
               "kv_bits": assumed(a_bits[0], "KV stored at datapath.activation_bits")},
              higher_is_better=False)
    cap = add("sram__kv_cache__capacity_bytes", per_die * dies.value, "B",
              "kv_cache SRAM per die × design__die__count",
              {"kv_cache_bytes_per_die": (per_die, f"base array {base.name}: sram[purpose="
                                          "kv_cache].capacity_bytes"),
               "design__die__count": from_metric(dies)}, higher_is_better=True)
    users_in = from_model(users, "--users")
    add("sram__kv_cache__user_bytes", bpt.value * context, "B",
        "sram__kv_cache__bytes_per_token × context",
        {"sram__kv_cache__bytes_per_token": from_metric(bpt),
         "context": from_model(context, "--context")}, higher_is_better=False)
    add("sram__kv_cache__max_context_per_user",
        int(cap.value // (users * bpt.value)) if bpt.value else 0, "tokens",
        "floor(capacity / (users × bytes per token))",
        {"sram__kv_cache__capacity_bytes": from_metric(cap), "users": users_in,
         "sram__kv_cache__bytes_per_token": from_metric(bpt)}, higher_is_better=True)
    add("sram__kv_cache__users_at_context",
        int(cap.value // (context * bpt.value)) if bpt.value else 0, "users",
        "floor(capacity / (context × bytes per token))",
        {"sram__kv_cache__capacity_bytes": from_metric(cap),
         "context": from_model(context, "--context"),
         "sram__kv_cache__bytes_per_token": from_metric(bpt)}, higher_is_better=True)


def _lora(base, add, dies: Metric, lora: Lora | None) -> None:
    lora_cap = sum(b.capacity_bytes for b in base.sram if b.purpose == "lora") * dies.value
    lcap = add("sram__lora__capacity_bytes", lora_cap, "B",
               "lora SRAM per die × design__die__count",
               {"lora_bytes_per_die": (lora_cap // dies.value, f"base array {base.name}: "
                                       "sram[purpose=lora].capacity_bytes"),
                "design__die__count": from_metric(dies)}, higher_is_better=True)
    if lora is not None:
        need = add("sram__lora__adapter_bytes", lora.params * LORA_BITS // 8, "B",
                   f"adapter parameters × {LORA_BITS} / 8",
                   {"adapter_params": from_model(lora.params, lora.source),
                    "lora_bits": assumed(LORA_BITS, "adapters kept at 16 bits in SRAM")},
                   higher_is_better=False)
        add("sram__lora__fits", need.value <= lcap.value, "",
            "sram__lora__adapter_bytes ≤ sram__lora__capacity_bytes",
            {"sram__lora__adapter_bytes": from_metric(need),
             "sram__lora__capacity_bytes": from_metric(lcap)}, higher_is_better=True)
