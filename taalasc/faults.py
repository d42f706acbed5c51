"""Fault injection: random via opens, shorts and flips, and the quality they cost.

The fault model (the encoding: every used bit site has a tie-high and a tie-low slot under
two top-metal straps that run along the tile's site row; a good site has exactly one via):

* **flip** — the via sits in the wrong slot: the site reads the inverted bit.
* **open** — no via: the site's input floats. We assume the base tile gives every site input
  a weak pull-down (a keeper), which a base array needs anyway so that an open is
  deterministic and testable: the site reads 0 (``open_model="zero"``). ``"random"`` instead
  reads a seeded random bit (an input left truly floating).
* **short** — vias in both slots join the row's high and low straps. The straps are driven by
  tie cells, the tie-low NMOS is the stronger driver, so both straps of that site row settle
  low: every site of the row reads 0 (``short_model="row"``, the default, up to
  ``sites_x`` bits lost). ``"site"`` is the optimistic model where only the shorted site
  reads 0 (per-site tie resistors). Were the straps tied straight to the rails, a short would
  be a supply short and kill the die: that is yield, not quality, and is not modelled here.

Faults are drawn per used site (codes, fp16 scales, fp16 vectors alike): the number of
faulty sites is Binomial(sites, sum of rates), the sites are a uniform sample without
replacement, and each faulty site's kind is drawn in proportion to the rates, so a site holds
at most one fault. Everything is seeded (``numpy.random.default_rng(seed)``). Faults are
applied in memory to the values extracted from the masks; the mask files are never touched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from taalasc.extract.extract import chip_weights

from taalasc.errors import ModelError

FAULT_KINDS = ("flip", "open", "short")
OPEN_MODELS = ("zero", "random")
SHORT_MODELS = ("row", "site")


@dataclass
class FaultLog:
    """What one injection did. ``counts``: faulty sites per fault kind; ``per_tensor``:
    tensor -> fault kind -> faulty sites; ``changed_bits``: tensor -> stream ("codes",
    "scales", "vector") -> stored bits whose value changed (an open on a 0 changes none)."""

    sites: int = 0
    counts: dict[str, int] = field(default_factory=lambda: {k: 0 for k in FAULT_KINDS})
    per_tensor: dict[str, dict[str, int]] = field(default_factory=dict)
    changed_bits: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def faults(self) -> int:
        return sum(self.counts.values())

    @property
    def bits_changed(self) -> int:
        return sum(sum(v.values()) for v in self.changed_bits.values())

    def to_dict(self) -> dict:
        return {"sites": self.sites, "faults": self.faults, "counts": dict(self.counts),
                "bits_changed": self.bits_changed, "per_tensor": self.per_tensor,
                "changed_bits": self.changed_bits}


def check_rates(rates: dict[str, float]) -> dict[str, float]:
    """Rates per fault kind, each a probability per site, summing to at most 1."""
    out = {}
    for kind, rate in sorted(rates.items()):
        if kind not in FAULT_KINDS:
            raise ModelError(f"fault kind must be one of {', '.join(FAULT_KINDS)}, not {kind!r}")
        if not isinstance(rate, (int, float)) or not math.isfinite(rate) or not 0 <= rate <= 1:
            raise ModelError(f"fault rate of {kind!r} must be a number in [0, 1], not {rate!r}")
        out[kind] = float(rate)
    if sum(out.values()) > 1:
        raise ModelError(f"fault rates must sum to at most 1 per site, not {sum(out.values())!r}")
    return out


def _patterns(extraction) -> dict[tuple[str, str], np.ndarray]:
    """Unsigned bit patterns of every stored array, 2-D, as int64 (codes: low b bits)."""
    out = {}
    for name, codes in extraction.codes.items():
        out[(name, "codes")] = codes.astype(np.int64) & 0xFF   # masked to b bits per segment
    for kind in ("scales", "mins"):
        for name, values in getattr(extraction, kind).items():
            out[(name, kind)] = values.view(np.uint16).astype(np.int64)
    for name, vector in extraction.vectors.items():
        out[(name, "vector")] = vector.view(np.uint16).astype(np.int64).reshape(1, -1)
    return out


def _values(extraction, patterns, bits_of: dict[str, int]):
    """A new Extraction holding the values of ``patterns`` (codes sign-extended from b bits)."""
    from taalasc.extract.extract import Extraction

    out = Extraction(defects=list(extraction.defects), defect_count=extraction.defect_count,
                     vias_read=extraction.vias_read)
    for (name, stream), pat in patterns.items():
        if stream == "codes":
            b = bits_of[name]
            low = pat & ((1 << b) - 1)
            out.codes[name] = (low - (((low >> (b - 1)) & 1) << b)).astype(np.int8)
        elif stream in ("scales", "mins"):
            getattr(out, stream)[name] = pat.astype(np.uint16).view(np.float16)
        else:
            out.vectors[name] = pat.astype(np.uint16).view(np.float16).reshape(-1)
    return out


def _popcount(x: np.ndarray) -> int:
    x = x.astype(np.uint64)
    return int(np.unpackbits(x.view(np.uint8)).sum())


def inject(extraction, placement, rates: dict[str, float], seed, *,
           only: Callable | None = None, bit: int | None = None, count: int | None = None,
           sites_x: int | None = None, open_model: str = "zero",
           short_model: str = "row"):
    """Faulty copy of ``extraction`` and the FaultLog of what was injected.

    ``rates``: fault kind -> probability per used site. ``seed``: anything
    ``numpy.random.default_rng`` takes. ``only(segment) -> bool`` limits faults to some
    segments; ``bit`` to one bit position of each element (sites e*bits + bit; -1 is the
    top bit, the sign of a code or of an fp16 value); ``count``
    injects exactly that many faulty sites (kinds still in proportion to ``rates``) instead of
    a Binomial number. ``sites_x`` (sites per tile row, for row shorts) defaults to the
    placement's base array. The input extraction is not modified.
    """
    rates = check_rates(rates)
    if open_model not in OPEN_MODELS:
        raise ModelError(f"open model must be one of {', '.join(OPEN_MODELS)}, not {open_model!r}")
    if short_model not in SHORT_MODELS:
        raise ModelError(f"short model must be one of {', '.join(SHORT_MODELS)}, "
                         f"not {short_model!r}")
    if sites_x is None:
        from taalasc.config import load_base_array
        sites_x = load_base_array(placement.base_name).weight_tile.sites_x
    rng = np.random.default_rng(seed)
    kinds = [k for k in FAULT_KINDS if rates.get(k, 0) > 0]
    segments = [seg for _, seg in placement.assignments if only is None or only(seg)]
    if bit is not None:  # a negative bit counts from each element's top: -1 is a code's sign
        segments = [s for s in segments if -s.bits <= bit < s.bits]
    eligible = np.array([s.elements if bit is not None else s.used_sites for s in segments],
                        dtype=np.int64)
    total = int(eligible.sum())
    log = FaultLog(sites=total)
    p_total = sum(rates.get(k, 0.0) for k in kinds)
    if count is not None:
        if not kinds:
            raise ModelError("a fault count needs at least one fault kind with a rate above 0")
        n = min(int(count), total)
    else:
        n = int(rng.binomial(total, p_total)) if total and p_total > 0 else 0
    patterns = _patterns(extraction)
    bits_of = {seg.tensor: seg.bits for _, seg in placement.assignments if seg.kind == "codes"}
    if n == 0:
        return _values(extraction, patterns, bits_of), log
    picked = np.sort(rng.choice(total, size=n, replace=False))
    probs = np.array([rates[k] for k in kinds]) / p_total
    kind_of = rng.choice(len(kinds), size=n, p=probs)
    ends = np.cumsum(eligible)
    seg_index = np.searchsorted(ends, picked, side="right")
    local = picked - (ends - eligible)[seg_index]
    before = {key: pat.copy() for key, pat in patterns.items()}
    shorts = []  # applied last: a collapsed strap overrides any other fault in its row
    for i in np.unique(seg_index).tolist():
        seg = segments[i]
        mine = seg_index == i
        for j, kind in enumerate(kinds):
            sel = local[mine & (kind_of == j)]
            if not len(sel):
                continue
            sites = sel * seg.bits + bit % seg.bits if bit is not None else sel
            log.counts[kind] += len(sites)
            per = log.per_tensor.setdefault(seg.tensor, {})
            per[kind] = per.get(kind, 0) + len(sites)
            if kind == "short":
                shorts.append((seg, sites))
            else:
                _apply(patterns[(seg.tensor, seg.kind)], seg, sites, kind, open_model, rng)
    for seg, sites in shorts:
        if short_model == "row":
            rows = np.unique(sites // sites_x)
            sites = (rows[:, None] * sites_x + np.arange(sites_x)[None, :]).reshape(-1)
            sites = sites[sites < seg.used_sites]
        _apply(patterns[(seg.tensor, seg.kind)], seg, sites, "short", open_model, rng)
    for (name, stream), pat in patterns.items():
        changed = _popcount(pat ^ before[(name, stream)])
        if changed:
            log.changed_bits.setdefault(name, {})[stream] = changed
    return _values(extraction, patterns, bits_of), log


def _apply(pattern: np.ndarray, seg, sites: np.ndarray, kind: str, open_model: str, rng) -> None:
    """Apply one fault kind at ``sites`` (site indices inside ``seg``) to ``pattern``."""
    element, bit = np.divmod(sites, seg.bits)
    width = seg.cols[1] - seg.cols[0]
    r, c = np.divmod(element, width)
    index = (r + seg.rows[0], c + seg.cols[0])
    mask = np.left_shift(1, bit).astype(np.int64)
    if kind == "flip":
        np.bitwise_xor.at(pattern, index, mask)
    elif kind == "open" and open_model == "random":
        np.bitwise_and.at(pattern, index, ~mask)
        np.bitwise_or.at(pattern, index, mask * rng.integers(0, 2, size=len(sites)))
    else:  # an open with a pull-down, or a short: the site reads 0
        np.bitwise_and.at(pattern, index, ~mask)


# --- measurement ------------------------------------------------------------------------------

class FaultBench:
    """One compile folder and its checkpoint, read once: the extraction, the float reference
    and the fault-free chip. ``measure`` runs the chip on a faulty extraction and scores it
    against both."""

    def __init__(self, out_dir, model, tokens: Sequence[int] | None = None,
                 fmt: str | None = None):
        from pathlib import Path

        from taalasc.extract.extract import base_of, extract, read_manifest, written_format
        from taalasc.model import open_checkpoint
        from taalasc.outdir import sha256_file
        from taalasc.place.store import read_placement
        from taalasc.sim import CheckpointSource, run_chip, run_float
        from taalasc.sim.graph import check_tokens, vocab_size
        from taalasc.verify import default_tokens

        out_dir = Path(out_dir)
        manifest = read_manifest(out_dir)
        self.base = base_of(manifest, out_dir)
        if self.base.weight_tile.encoding != "tie-high-low":
            raise ModelError(f"{out_dir}: the fault model is tie-high-low's (a flip moves a via "
                             "to the other strap, a short joins the two straps); "
                             f"{self.base.name} stores {self.base.weight_tile.encoding!r} "
                             "sites, which it does not model")
        self.ckpt = ckpt = open_checkpoint(model)
        compiled = {f["name"]: f["sha256"] for f in manifest["inputs"]["model"]["files"]}
        given = {Path(f).name: sha256_file(Path(f)) for f in ckpt.files}
        if compiled != given:
            raise ModelError(f"{model}: not the checkpoint {out_dir} was compiled from "
                             f"(files {sorted(given)} vs {sorted(compiled)} in the manifest)")
        where = str(ckpt.path)
        vocab = vocab_size(ckpt.config, ckpt.architecture, where)
        self.tokens = list(tokens) if tokens is not None else default_tokens(vocab)
        check_tokens(self.tokens, vocab, where)
        self.quantization = manifest["quantization"]
        self.placement = read_placement(out_dir, manifest)
        self.extraction = extract(out_dir, fmt or written_format(manifest),
                                  placement=self.placement)
        missing = [n for n in ckpt.tensors
                   if n not in self.extraction.codes and n not in self.extraction.vectors]
        if missing:
            raise ModelError(f"{out_dir}: tensor {missing[0]!r} is not in the masks "
                             f"({len(missing)} missing; a partial compile cannot run)")
        self._run = lambda weights: run_chip(weights, ckpt.config, ckpt.architecture,
                                             self.tokens, self.base.datapath,
                                             weight_tile=self.base.weight_tile)
        self.reference = run_float(CheckpointSource(ckpt), ckpt.config, ckpt.architecture,
                                   self.tokens)
        self.clean = self._run(chip_weights(self.extraction, self.quantization))
        self.decoder = self.reference.logits is not None
        self.clean_figures = self._score(self.clean)

    def _score(self, chip) -> dict[str, float]:
        """Figures of ``chip`` against the float reference (_vs_float) and the fault-free chip
        (_vs_chip). A position whose outputs hold NaN/Inf is lost: it never agrees on top-1,
        its cosine counts as 0, and any lost position makes the KL infinite (a distribution
        that is not one is infinitely far from the reference)."""
        from taalasc.sim import compare

        attr = "logits" if self.decoder else "hidden"
        keep = np.isfinite(getattr(chip, attr)).all(axis=-1)
        share = float(keep.mean())
        figures: dict[str, float] = {"nonfinite_positions": int((~keep).sum())}
        names = ((("top1", "top1_agreement"), ("kl", "kl_mean_nats"),
                  ("cosine", "logit_cosine_mean")) if self.decoder
                 else (("cosine", "hidden_cosine_mean"),))
        clean = getattr(self, "clean", chip)
        for suffix, ref in (("float", self.reference), ("chip", clean)):
            got = compare(_rows(ref, keep, attr), _rows(chip, keep, attr)) if keep.any() else {}
            for short, long in names:
                value = got.get(long, 0.0)
                if short == "kl":
                    value = value if keep.all() else math.inf
                else:  # lost positions count as 0 in the mean over positions
                    value *= share
                figures[f"{short}_vs_{suffix}"] = float(value)
        return figures

    @property
    def damage_key(self) -> str:
        """What fragility ranks by: KL vs the fault-free chip (decoders), else 1 - cosine."""
        return "kl_vs_chip" if self.decoder else "1-cosine_vs_chip"

    def measure(self, faulty) -> dict[str, float]:
        """Quality figures of the chip on ``faulty`` against the float reference (_vs_float)
        and the fault-free chip (_vs_chip)."""
        from dataclasses import replace

        weights = chip_weights(faulty, self.quantization)
        with np.errstate(all="ignore"):  # inf/NaN from a broken exponent are measured, not noise
            try:
                chip = self._run(weights)
            except ModelError as exc:
                # The chip model refuses to quantize a non-finite activation vector; on the
                # chip that vector's absmax scale is inf and everything downstream is garbage.
                if "not finite" not in str(exc):
                    raise
                attr = "logits" if self.decoder else "hidden"
                lost = np.full_like(getattr(self.clean, attr), np.nan)
                chip = replace(self.clean, **{attr: lost},
                               **({} if self.decoder else {"pooled": None}))
            return self._score(chip)

    def inject(self, rates, seed, **options):
        return inject(self.extraction, self.placement, rates, seed,
                      sites_x=self.base.weight_tile.sites_x, **options)


_WORSE_IS_HIGHER = ("kl",)


def _rows(result, keep: np.ndarray, attr: str):
    """``result`` restricted to the positions in ``keep`` (pooled dropped unless finite)."""
    from dataclasses import replace

    if keep.all():
        return result
    pooled = result.pooled if result.pooled is not None and np.isfinite(result.pooled).all() \
        else None
    return replace(result, tokens=tuple(np.asarray(result.tokens)[keep].tolist()),
                   **{attr: getattr(result, attr)[keep]}, pooled=pooled)


def _summarize(trials: list[dict[str, float]]) -> dict[str, float]:
    """Mean and worst over trials of every figure (worst: max for KL, min for the rest)."""
    out: dict[str, float] = {}
    for key in trials[0]:
        values = np.array([t[key] for t in trials], dtype=np.float64)
        out[f"{key}_mean"] = float(values.mean())
        higher = key.startswith(_WORSE_IS_HIGHER) or key in ("faults", "bits_changed",
                                                             "nonfinite_positions")
        out[f"{key}_worst"] = float(values.max() if higher else values.min())
    return out


def fault_curve(out_dir, model, rates: Sequence[float], kinds: Sequence[str] = FAULT_KINDS,
                trials: int = 3, seed: int = 0, tokens: Sequence[int] | None = None, *,
                bench: FaultBench | None = None, open_model: str = "zero",
                short_model: str = "row", progress=None) -> list[dict]:
    """Quality against fault rate: one row per rate (each fault kind in ``kinds`` at that
    rate per site), mean and worst over ``trials`` seeded trials (seed [seed, trial])."""
    bench = bench or FaultBench(out_dir, model, tokens)
    _check_trials(trials, kinds)
    rows = []
    for i, rate in enumerate(rates):
        per_kind = check_rates({k: float(rate) for k in kinds})
        results = []
        for trial in range(trials):
            faulty, log = bench.inject(per_kind, [seed, trial], open_model=open_model,
                                       short_model=short_model)
            results.append({"faults": log.faults, "bits_changed": log.bits_changed}
                           | bench.measure(faulty))
            if progress:
                progress("curve", i * trials + trial + 1, len(rates) * trials)
        rows.append({"rate": float(rate), "kinds": list(kinds), "trials": trials,
                     "sites": log.sites} | _summarize(results))
    return rows


def _check_trials(trials: int, kinds: Sequence[str]) -> None:
    if not isinstance(trials, int) or trials < 1:
        raise ModelError(f"trials must be an integer >= 1, not {trials!r}")
    if not kinds:
        raise ModelError(f"kinds must name at least one of {', '.join(FAULT_KINDS)}")
    check_rates({k: 0.0 for k in kinds})


def fragility(out_dir, model, rate: float, seed: int = 0, *, kinds: Sequence[str] = FAULT_KINDS,
              trials: int = 3, min_faults: int = 32, tokens: Sequence[int] | None = None,
              bench: FaultBench | None = None, open_model: str = "zero",
              short_model: str = "row", progress=None) -> dict:
    """Which stored arrays are most fragile, and which bit positions.

    ``streams``: for every (tensor, stream) of the placement, faults only there: exactly
    max(min_faults, round(rate * sites)) faulty sites, ``trials`` times; sorted by the damage
    (KL vs the fault-free chip for decoders, mean over trials) per fault, worst first.
    ``by_kind``: codes vs scales vs vectors, mean damage per fault. ``by_bit``: ``min_faults``
    flips at one bit position of every array of a stream kind (code LSB and sign bit; every
    bit of the fp16 scales and vectors)."""
    bench = bench or FaultBench(out_dir, model, tokens)
    _check_trials(trials, kinds)
    if not isinstance(min_faults, int) or min_faults < 1:
        raise ModelError(f"min_faults must be an integer >= 1, not {min_faults!r}")
    check_rates({"flip": rate})  # a probability; only the kinds' proportions matter below
    mix = check_rates({k: 1.0 / len(kinds) for k in kinds})
    key = bench.damage_key
    sites: dict[tuple[str, str], int] = {}
    for _, seg in bench.placement.assignments:
        sites[(seg.tensor, seg.kind)] = sites.get((seg.tensor, seg.kind), 0) + seg.used_sites
    jobs = [("stream", stream, None) for stream in sorted(sites)]
    jobs += [("bit", ("*", "codes"), b) for b in ("lsb", "sign")]
    jobs += [("bit", ("*", s), b) for s in ("scales", "mins", "vector")
             if any(k == s for _, k in sites) for b in range(16)]
    streams, by_bit = [], []
    for j, (what, (tensor, stream), bit) in enumerate(jobs):
        results = []
        for trial in range(trials):
            if what == "stream":
                n = max(min_faults, round(rate * sites[(tensor, stream)]))
                faulty, log = bench.inject(
                    mix, [seed, trial, j], count=n, open_model=open_model,
                    short_model=short_model,
                    only=lambda s, t=tensor, k=stream: s.tensor == t and s.kind == k)
            else:  # flips only: opens and row shorts do not respect a bit position
                faulty, log = bench.inject({"flip": 1.0}, [seed, trial, j], count=min_faults,
                                           bit={"lsb": 0, "sign": -1}.get(bit, bit),
                                           only=lambda s, k=stream: s.kind == k)
            results.append({"faults": log.faults} | bench.measure(faulty))
        summary = _summarize(results)
        if bench.decoder:
            damage, worst = summary["kl_vs_chip_mean"], summary["kl_vs_chip_worst"]
        else:
            damage = 1 - summary["cosine_vs_chip_mean"]
            worst = 1 - summary["cosine_vs_chip_worst"]
        row = {"stream": stream, "faults": summary["faults_mean"], "damage": damage,
               "damage_worst": worst, "damage_per_fault": damage / max(summary["faults_mean"], 1)}
        if bench.decoder:
            row["top1_vs_chip"] = summary["top1_vs_chip_mean"]
        if what == "stream":
            streams.append({"tensor": tensor, "sites": sites[(tensor, stream)]} | row)
        else:
            by_bit.append({"bit": bit} | row)
        if progress:
            progress("fragility", j + 1, len(jobs))
    # worst first; an infinite KL (NaN outputs) ties, then the lower top-1 agreement is worse
    streams.sort(key=lambda r: (-r["damage_per_fault"], r.get("top1_vs_chip", 0.0),
                                r["tensor"], r["stream"]))
    by_kind = []
    for stream in ("codes", "scales", "mins", "vector"):
        mine = [r for r in streams if r["stream"] == stream]
        if mine:
            by_kind.append({"stream": stream, "arrays": len(mine),
                            "sites": sum(r["sites"] for r in mine),
                            "damage_per_fault": float(np.mean([r["damage_per_fault"]
                                                               for r in mine]))})
    return {"rate": float(rate), "kinds": list(kinds), "trials": trials,
            "damage": key, "streams": streams, "by_kind": by_kind, "by_bit": by_bit}

