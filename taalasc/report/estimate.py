"""Assemble the full report: area → SRAM → timing → power → cost, as one Report.

Two entry points: ``estimate`` (no weights: shapes from a preset, config.json or a checkpoint
header; bits from the header-only policy) and ``report_for_compile`` (compile's actual bits
and placement facts). Both call ``build_report``.
"""

from __future__ import annotations

from taalasc.errors import ModelError
from taalasc.report.area import PlacementFacts, area_metrics, tile_map
from taalasc.report.cost import cost_metrics
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
                 notes: list[str] | None = None, bits_label: str = "") -> Report:
    """Every metric for ``model`` at ``bits`` (name -> int or QuantSpec) on ``base``."""
    if users < 1:
        raise ModelError(f"--users must be at least 1, not {users!r}")
    if context < 1:
        raise ModelError(f"--context must be at least 1, not {context!r}")
    if not 0 < utilisation <= 1:
        raise ModelError(f"--utilisation must be in (0, 1], not {utilisation!r}")
    facts = facts or PlacementFacts()
    nbits = normalise_bits(model, bits)
    tmap = tile_map(model, nbits, base)
    metrics = area_metrics(model, tmap, base, facts)
    got = {m.name: m for m in metrics}
    for m in sram_metrics(model, base, got, users, context, lora):
        got[m.name] = m
    for m in timing_metrics(model, tmap, base, facts, users, got):
        got[m.name] = m
    for m in power_metrics(model, tmap, base, got, context):
        got[m.name] = m
    for m in cost_metrics(base, got, utilisation):
        got[m.name] = m
    ordered = sorted(got.values(), key=lambda m: _ORDER.index(m.name.split("__")[0]))
    all_notes = list(notes or [])
    if not got["design__die__fits"].value:
        all_notes.append(f"the model needs {got['design__die__count'].value} dies; "
                         f"{base.name} allows at most {base.max_dies}")
    if got["timing__setup__ws"].value < 0:
        all_notes.append("the critical path is longer than clock.target_period_ps; throughput "
                         "uses the slower achievable period")
    if got["throughput__users__served"].value < users:
        all_notes.append(f"only {got['throughput__users__served'].value} of {users} users' KV "
                         f"caches fit the SRAM at {context:,} tokens; throughput counts those")
    if got["sram__kv_cache__users_at_context"].value == 0 and model.is_decoder():
        all_notes.append(f"one user's KV cache at {context:,} tokens does not fit the SRAM "
                         f"(longest context: {got['sram__kv_cache__max_context_per_user'].value:,})")
    if facts.longest_route_nm is None:
        all_notes.append("timing__route__longest_um is a geometric estimate (no placement)")
    if got["design__die__count"].value > 1:
        all_notes.append("die-to-die links are not modelled: their latency adds to every "
                         "token that crosses a die")
    all_notes.append("attention score/softmax cycles over the KV cache are folded into "
                     "pipeline_stages_per_layer, not modelled per context position")
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
             group_size: int | None = 128, **options) -> Report:
    """Estimate without weights: bits from names and shapes (``header_bits``)."""
    bits, notes = header_bits(model, default_bits, list(rules), auto)
    specs = {n: _Spec(b, group_size) for n, b in bits.items()}
    if auto:
        label = f"auto {auto[0]}/{auto[1]} within {auto[2]} bits/weight (heuristic)"
    else:
        label = f"{default_bits} bits" + "".join(f", {g}={b}" for g, b in rules)
    label += f", group {group_size}" if group_size else ", per-channel scales"
    return build_report(model, specs, base, None, notes=notes, bits_label=label, **options)


class _Spec:
    """Minimal stand-in for taalasc.quant.QuantSpec (bits, group_size)."""

    __slots__ = ("bits", "group_size")

    def __init__(self, bits: int, group_size: int | None):
        self.bits, self.group_size = bits, group_size
