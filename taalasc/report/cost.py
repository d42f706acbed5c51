"""Cost: dies per wafer, yield, cost per good die, mask NRE, re-spin, cost per token.

Dies per wafer (the standard gross-die formula, e.g. Hennessy & Patterson ch. 1):
    DPW = floor(π (d/2)² / S − π d / √(2 S)),  d = diameter − 2·edge exclusion,
    S = (die width + scribe) × (die height + scribe)
Yield with A = die area, D0 = defect density:
    Poisson e^(−A·D0);  Murphy ((1 − e^(−A·D0)) / (A·D0))²;  negative binomial
    (1 + A·D0/α)^(−α). Cost per good die uses the negative binomial (clustered defects).
Cost per million tokens = 1e6 × (silicon cost / (lifetime × utilisation × aggregate
tokens/s) + joules per token × electricity price).
"""

from __future__ import annotations

import math

from taalasc.report.metrics import Metric, assumed, from_metric, from_pdk
from taalasc.report.power import served_tokens_per_s

LIFETIME_YEARS = 3.0
USD_PER_KWH = 0.10


def dies_per_wafer(die_w_mm: float, die_h_mm: float, diameter_mm: float, edge_mm: float,
                   scribe_mm: float) -> int:
    d = diameter_mm - 2 * edge_mm
    s = (die_w_mm + scribe_mm) * (die_h_mm + scribe_mm)
    return max(0, math.floor(math.pi * (d / 2) ** 2 / s - math.pi * d / math.sqrt(2 * s)))


def yield_poisson(area_cm2: float, d0: float) -> float:
    return math.exp(-area_cm2 * d0)


def yield_murphy(area_cm2: float, d0: float) -> float:
    ad = area_cm2 * d0
    return 1.0 if ad == 0 else ((1 - math.exp(-ad)) / ad) ** 2


def yield_negative_binomial(area_cm2: float, d0: float, alpha: float) -> float:
    return (1 + area_cm2 * d0 / alpha) ** (-alpha)


def cost_metrics(base, got: dict[str, Metric], utilisation: float) -> list[Metric]:
    pdk = base.pdk
    M: list[Metric] = []

    def add(*args, **kw) -> Metric:
        M.append(Metric(*args, **kw))
        return M[-1]

    w_mm, h_mm = base.die.width_nm * 1e-6, base.die.height_nm * 1e-6
    dia, edge = from_pdk(pdk, "cost.wafer_diameter_mm"), from_pdk(pdk, "cost.edge_exclusion_mm")
    scribe = from_pdk(pdk, "cost.scribe_um")
    dpw = add("cost__wafer__dies_gross",
              dies_per_wafer(w_mm, h_mm, dia[0], edge[0], scribe[0] / 1000), "dies",
              "floor(π(d/2)²/S − πd/√(2S)), d = diameter − 2·edge, S = (w+scribe)(h+scribe)",
              {"die_width_mm": (w_mm, f"base array {base.name}: die.width_nm"),
               "die_height_mm": (h_mm, f"base array {base.name}: die.height_nm"),
               "wafer_diameter_mm": dia, "edge_exclusion_mm": edge, "scribe_um": scribe},
              higher_is_better=True)
    area = got["design__die__area"]
    a_cm2 = area.value / 100
    d0, alpha = from_pdk(pdk, "cost.defect_density_per_cm2"), from_pdk(pdk, "cost.cluster_alpha")
    yin = {"design__die__area": from_metric(area), "defect_density_per_cm2": d0}
    add("cost__yield__poisson", yield_poisson(a_cm2, d0[0]), "fraction", "e^(−A·D0)", yin,
        higher_is_better=True)
    add("cost__yield__murphy", yield_murphy(a_cm2, d0[0]), "fraction",
        "((1 − e^(−A·D0)) / (A·D0))²", yin, higher_is_better=True)
    ynb = add("cost__yield__negative_binomial", yield_negative_binomial(a_cm2, d0[0], alpha[0]),
              "fraction", "(1 + A·D0/α)^(−α)", {**yin, "cluster_alpha": alpha},
              higher_is_better=True)
    wafer = from_pdk(pdk, "cost.wafer_cost_usd")
    good = dpw.value * ynb.value
    die_usd = add("cost__die__usd", wafer[0] / good if good else math.inf, "USD",
                  "wafer cost / (cost__wafer__dies_gross × cost__yield__negative_binomial)",
                  {"wafer_cost_usd": wafer, "cost__wafer__dies_gross": from_metric(dpw),
                   "cost__yield__negative_binomial": from_metric(ynb)}, higher_is_better=False)
    dies = got["design__die__count"]
    chip = add("cost__silicon__usd", die_usd.value * dies.value, "USD",
               "cost__die__usd × design__die__count",
               {"cost__die__usd": from_metric(die_usd), "design__die__count": from_metric(dies)},
               higher_is_better=False, description="good dies for one copy of the model; "
               "no package, board, test or memory")
    via, top = from_pdk(pdk, "cost.via_mask_cost_usd"), from_pdk(pdk, "cost.top_metal_mask_cost_usd")
    nre = add("cost__nre__custom_masks_usd", via[0] + top[0], "USD",
              "via mask + top-metal mask",
              {"via_mask_cost_usd": via, "top_metal_mask_cost_usd": top}, higher_is_better=False)
    full = from_pdk(pdk, "cost.mask_set_cost_usd")
    add("cost__nre__full_mask_set_usd", full[0], "USD", "cost.mask_set_cost_usd",
        {"mask_set_cost_usd": full, "mask_count": from_pdk(pdk, "cost.mask_count")})
    add("cost__nre__custom_fraction", nre.value / full[0], "fraction",
        "cost__nre__custom_masks_usd / cost__nre__full_mask_set_usd",
        {"cost__nre__custom_masks_usd": from_metric(nre), "mask_set_cost_usd": full},
        higher_is_better=False)
    add("cost__respin__usd", nre.value, "USD",
        "cost__nre__custom_masks_usd (a new model or a fix re-draws only the two custom masks; "
        "the base wafers are already processed up to them)",
        {"cost__nre__custom_masks_usd": from_metric(nre)}, higher_is_better=False)
    agg = served_tokens_per_s(got)
    jpt = got["power__token__joules"]
    life_s = LIFETIME_YEARS * 365.25 * 86400
    usd_per_j = USD_PER_KWH / 3.6e6
    tokens = life_s * utilisation * agg.value
    per_m = 1e6 * (chip.value / tokens + jpt.value * usd_per_j) if tokens else math.inf
    add("cost__tokens__usd_per_million", per_m, "USD/Mtoken",
        "1e6 × (cost__silicon__usd / (lifetime × utilisation × "
        + ("aggregate tokens/s" if agg.name == "throughput__aggregate__tokens_per_s"
           else "encoder tokens/s") + ") + J/token × USD/J)",
        {"cost__silicon__usd": from_metric(chip), agg.name: from_metric(agg),
         "power__token__joules": from_metric(jpt),
         "utilisation": (utilisation, "--utilisation"),
         "lifetime_years": assumed(LIFETIME_YEARS, "silicon depreciated over 3 years"),
         "usd_per_kwh": assumed(USD_PER_KWH, "electricity price")}, higher_is_better=False)
    return M
