"""Assemble the full report: area → SRAM → timing → power → cost, as one Report.

Two entry points: ``estimate`` (no weights: shapes from a preset, config.json or a checkpoint
header; bits from the header-only policy) and ``report_for_compile`` (compile's actual bits
and placement facts). Both call ``build_report``.
"""

from __future__ import annotations

from dataclasses import replace

from taalasc.errors import ModelError
from taalasc.inputfile import display
from taalasc.model import arch
from taalasc.report.area import PlacementFacts, area_metrics, tile_map
from taalasc.report.cost import cost_metrics
from taalasc.report.datapath import datapath_extras
from taalasc.report.encoding import zero_bit_input
from taalasc.report.metrics import Report
from taalasc.report.power import power_metrics
from taalasc.report.shape import ModelShape, header_bits, normalise_bits
from taalasc.report.sram import Lora, sram_metrics
from taalasc.report.timing import timing_metrics

DEFAULT_USERS = 1
DEFAULT_CONTEXT = 2048
DEFAULT_UTILISATION = 0.5
_ORDER = ("design", "timing", "throughput", "power", "sram", "cost")


def build_report(model: ModelShape, bits: dict, base, facts: PlacementFacts | None = None, *,
                 users: int = DEFAULT_USERS, context: int = DEFAULT_CONTEXT,
                 lora: Lora | None = None, utilisation: float = DEFAULT_UTILISATION,
                 notes: list[str] | None = None, bits_label: str = "",
                 zero_bit_ratio: float | None = None) -> Report:
    """Every metric for ``model`` at ``bits`` (name -> int or QuantSpec) on ``base``.
    ``zero_bit_ratio``: the share of zero weight bits, for a zero-skip base (default
    encoding.DEFAULT_ZERO_BIT_RATIO, an assumption)."""
    if users < 1:
        raise ModelError(f"--users must be at least 1, not {users!r}")
    if context < 1:
        raise ModelError(f"--context must be at least 1, not {context!r}")
    if not 0 < utilisation <= 1:
        raise ModelError(f"--utilisation must be in (0, 1], not {utilisation!r}")
    zero_bits = zero_bit_input(base, zero_bit_ratio)
    # a folder name that is not UTF-8 (kept by Python as lone surrogates) must still print
    # and be written into report.json
    model = replace(model, name=display(model.name), source=display(model.source))
    arch.require_matrices(model.tensors, model.source or model.name)
    facts = facts or PlacementFacts()
    nbits = normalise_bits(model, bits)
    asymmetric = frozenset(n for n, spec in bits.items() if getattr(spec, "asymmetric", False))
    tmap = tile_map(model, nbits, base, asymmetric)
    extras = datapath_extras(model, nbits, base, asymmetric)
    metrics = area_metrics(model, tmap, base, facts, extras, zero_bits)
    got = {m.name: m for m in metrics}
    for m in sram_metrics(model, base, got, users, context, lora):
        got[m.name] = m
    for m in timing_metrics(model, tmap, base, facts, users, got, extras):
        got[m.name] = m
    for m in power_metrics(model, tmap, base, got, context, extras, zero_bits[0]):
        got[m.name] = m
    for m in cost_metrics(base, got, utilisation):
        got[m.name] = m
    ordered = sorted(got.values(), key=lambda m: _ORDER.index(m.name.split("__")[0]))
    all_notes = list(notes or [])
    if not got["design__die__fits"].value:
        all_notes.append(f"the model needs {got['design__die__count'].value} dies; "
                         f"{base.name} allows at most {base.max_dies}; "
                         f"{_fit_hint(model, nbits, asymmetric, base)}")
    if got["timing__setup__ws"].value < 0:
        all_notes.append("the critical path is longer than clock.target_period_ps; throughput "
                         "uses the slower achievable period")
    decoder = model.is_decoder()
    if decoder and got["throughput__users__served"].value < users:
        all_notes.append(f"only {got['throughput__users__served'].value} of {users} users' KV "
                         f"caches fit the SRAM at {context:,} tokens; throughput counts those")
    if decoder and got["sram__kv_cache__users_at_context"].value == 0:
        all_notes.append(f"one user's KV cache at {context:,} tokens does not fit the SRAM "
                         f"(longest context: {got['sram__kv_cache__max_context_per_user'].value:,})")
    if facts.longest_route_nm is None:
        all_notes.append("timing__route__longest_um is a geometric estimate (no placement)")
    if got["design__die__count"].value > 1:
        all_notes.append("die-to-die links are not modelled: their latency adds to every "
                         "token that crosses a die")
    if decoder:
        all_notes.append("attention score/softmax cycles over the KV cache are folded into "
                         "pipeline_stages_per_layer, not modelled per context position")
    else:
        seq, seq_source = model.sequence_length()
        all_notes.append(f"encoder ({model.name}): no decode loop and no KV cache; throughput "
                         f"is a full-sequence forward of {seq:,} tokens ({seq_source}); "
                         "attention over the sequence is folded into "
                         "pipeline_stages_per_layer")
        if not got["sram__attention__fits"].value:
            all_notes.append("the K and V of one sequence do not fit the kv_cache SRAM "
                             f"({got['sram__attention__bytes_per_sequence'].value:,.0f} B "
                             f"needed, {got['sram__attention__capacity_bytes'].value:,} B "
                             "on the dies used)")
    if extras.activation_group or extras.asym_group:
        all_notes.append("per-group activation scales and asymmetric groups are charged with "
                         "estimated unit costs (FP16 multiply = m² + e full adders, comparator "
                         "= activation_bits full adders; taalasc/report/datapath.py)")
    encoding = base.weight_tile.encoding
    if encoding == "zero-skip":
        all_notes.append(f"zero-skip vias assume {zero_bits[0]:.0%} zero bits "
                         f"({zero_bits[1].removeprefix('assumption: ')})")
    if model.experts is not None:
        experts, active = model.experts
        all_notes.append(f"mixture of experts: {experts} experts, {active} per token; area "
                         "counts every expert, cycles and energy the active ones (idle experts' "
                         "tiles clock-gated: assumption); the router's top-k is folded into "
                         "pipeline_stages_per_layer")
    if "sliding_attention" in ((model.config or {}).get("layer_types") or ()):
        all_notes.append("sliding-window layers are counted at the full context (KV cache and "
                         "attention): an over-count for those layers")
    max_pos = (model.config or {}).get("max_position_embeddings")
    ctx = got.get("sram__kv_cache__max_context_per_user")
    if isinstance(max_pos, int) and ctx is not None and ctx.value > max_pos:
        all_notes.append(f"the SRAM holds more context ({ctx.value:,}) than the model's "
                         f"max_position_embeddings ({max_pos:,})")
    mean = got["design__weights__bits_per_weight"].value
    meta = {"model": model.name, "model_source": model.source, "base_array": base.name,
            "pdk": base.pdk.name, "params": model.params,
            "bits": bits_label or f"{mean:.3g} bits/weight (mean)", "users": users,
            "context": context, "utilisation": utilisation}
    if not decoder:  # users and context size a KV cache, which encoders do not have
        del meta["users"], meta["context"]
        meta["architecture"] = "encoder"
        meta["sequence_length"] = model.sequence_length()[0]
    return Report(ordered, meta, all_notes)


def report_for_compile(base, tensors: dict[str, tuple[int, ...]], bits: dict,
                       facts: PlacementFacts, config: dict | None = None,
                       name: str = "model", **options) -> Report:
    """For compile: actual shapes, bits (name -> QuantSpec or int) and placement facts."""
    model = ModelShape(name, dict(sorted((n, tuple(s)) for n, s in tensors.items())), config,
                       "compiled checkpoint")
    return build_report(model, bits, base, facts, **options)


def estimate(model: ModelShape, base, *, default_bits: int = 4,
             rules: list[tuple[str, int]] = (), auto: tuple[int, int, float] | None = None,
             group_size: int | None = 128, asymmetric: bool = False, **options) -> Report:
    """Estimate without weights: bits from names and shapes (``header_bits``);
    ``asymmetric`` charges a minimum per group (GGUF Q4_1-style codes) on every tensor."""
    bits, notes = header_bits(model, default_bits, list(rules), auto)
    specs = {n: _Spec(b, group_size, asymmetric) for n, b in bits.items()}
    if auto:
        label = f"auto {auto[0]}/{auto[1]} within {auto[2]} bits/weight (heuristic)"
    else:
        label = f"{default_bits} bits" + "".join(f", {g}={b}" for g, b in rules)
    label += f", group {group_size}" if group_size else ", per-channel scales"
    label += ", asymmetric" if asymmetric else ""
    return build_report(model, specs, base, None, notes=notes, bits_label=label, **options)


def _fit_hint(model: ModelShape, nbits: dict, asymmetric: frozenset[str], base) -> str:
    """The built-in bases that hold the model, by the placement rules (taalasc.place.fit)."""
    from taalasc.place.fit import fit_hint
    from taalasc.place.plan import TensorSpec

    specs = [TensorSpec(name, tuple(shape), nbits[name][0] if name in nbits else None,
                        nbits[name][1] if name in nbits else None, model.layer_of(name),
                        name in asymmetric)
             for name, shape in model.tensors.items()]
    return fit_hint(specs, base, need_masks=False)  # an estimate may target any PDK


class _Spec:
    """Minimal stand-in for taalasc.quant.QuantSpec (bits, group_size, asymmetric)."""

    __slots__ = ("asymmetric", "bits", "group_size")

    def __init__(self, bits: int, group_size: int | None, asymmetric: bool = False):
        self.bits, self.group_size, self.asymmetric = bits, group_size, asymmetric
