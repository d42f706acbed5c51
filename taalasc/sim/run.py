"""One simulation session: the float reference of the checkpoint next to the chip model.

``ChipWeights`` are an argument, not made here, so they can come from quantizing the
checkpoint in memory (``chip.chip_weights``) or from codes extracted from mask geometry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from taalasc.errors import OutputError
from taalasc.sim.chip import ChipWeights, DequantizedSource, run_chip
from taalasc.sim.float_ref import CheckpointSource, run_float
from taalasc.sim.graph import SimResult, check_tokens, vocab_size
from taalasc.sim.quality import compare


@dataclass
class Simulation:
    """The float reference, the chip result and the quality figures between them.

    ``quality`` compares the chip with the float model of the original weights (weight
    quantization + datapath error); ``datapath_quality`` compares it with the float model of
    the same dequantized codes (activation quantization, accumulator and vector-unit error
    only).
    """

    reference: SimResult
    chip: SimResult
    quality: dict[str, float]
    datapath_quality: dict[str, float]
    activation_bits: int
    accumulator_bits: int

    def outputs(self) -> tuple[np.ndarray, np.ndarray]:
        """(float, chip) main outputs: logits [seq, vocab], or hidden [seq, hidden] for BERT."""
        if self.reference.logits is not None:
            return self.reference.logits, self.chip.logits
        return self.reference.hidden, self.chip.hidden

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "architecture": self.reference.architecture,
            "tokens": list(self.reference.tokens),
            "datapath": {"activation_bits": self.activation_bits,
                         "accumulator_bits": self.accumulator_bits,
                         "accumulator_bits_needed": self.chip.accumulator_bits_needed,
                         "overflows": self.chip.overflow_count,
                         "overflows_by_tensor": self.chip.overflows},
            "quality": self.quality,
            "datapath_quality": self.datapath_quality,
        }
        if self.reference.logits is not None:
            out["next_token"] = {"float": int(self.reference.logits[-1].argmax()),
                                 "chip": int(self.chip.logits[-1].argmax())}
        return out


class MergedSource:
    """A float WeightSource with a LoRA adapter merged in: W + scaling·B·A for its targets.

    The float side of a LoRA run; the chip side applies the adapter at run time instead."""

    def __init__(self, source, adapter):
        self._source, self._adapter = source, adapter

    def names(self) -> list[str]:
        return self._source.names()

    def get(self, name: str) -> np.ndarray:
        weights = self._source.get(name)
        delta = self._adapter.delta(name)
        return weights if delta is None else (weights + delta).astype(np.float32)


def simulate(ckpt, weights: ChipWeights, tokens: Sequence[int], datapath,
             overflow: str = "saturate", lora=None, weight_tile=None) -> Simulation:
    """Run the float reference on ``ckpt``'s own weights and the chip on ``weights``.

    ``lora``: a taalasc.lora.LoraAdapter, applied at run time by the chip (from its SRAM) and
    merged into the weights on the float side. ``weight_tile``: the base array's, whose
    encoding the chip's tiles compute with (None: tie-high-low)."""
    where = str(ckpt.path)
    check_tokens(tokens, vocab_size(ckpt.config, ckpt.architecture, where), where)

    def merged(source):
        return source if lora is None else MergedSource(source, lora)

    ref = run_float(merged(CheckpointSource(ckpt)), ckpt.config, ckpt.architecture, tokens)
    chip = run_chip(weights, ckpt.config, ckpt.architecture, tokens, datapath, overflow, lora,
                    weight_tile)
    deq = run_float(merged(DequantizedSource(weights)), ckpt.config, ckpt.architecture, tokens)
    return Simulation(ref, chip, compare(ref, chip), compare(deq, chip),
                      int(datapath.activation_bits), int(datapath.accumulator_bits))


def save_outputs(sim: Simulation, out_dir: str | Path) -> list[Path]:
    """Write float.npy and chip.npy (logits [seq, vocab], or hidden [seq, hidden] for BERT)."""
    folder = Path(out_dir)
    written = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, array in zip(("float.npy", "chip.npy"), sim.outputs()):
            path = folder / name
            np.save(path, np.ascontiguousarray(array, dtype=np.float32))
            written.append(path)
    except OSError as exc:
        raise OutputError(f"{exc.filename or folder}: cannot write logits: "
                          f"{exc.strerror or exc}") from None
    return written
