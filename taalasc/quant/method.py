"""One way to quantize one tensor of a checkpoint, shared by every command.

compile (in its die workers), verify (which quantizes again to compare with the masks),
simulate, quality and faults must all produce the same codes for the same checkpoint and
policy. ``TensorQuantizer`` is that single place. It picks, per tensor:

  * **native** codes: a checkpoint that already holds integer codes the chip can store as
    they are (GGUF Q8_0, Q4_0, Q4_1 blocks; ``ckpt.native(name)``) gives them unchanged, so
    the chip computes the very model the user runs. Only when the plan gave the tensor the
    file's own format (``native_specs``); a rule that asks for other bits re-quantizes.
  * **gptq**: error-compensating rounding with the Hessians of calibration activations
    (``taalasc.quant.gptq``); the Hessians are computed once per quantizer.
  * **rtn**: round to nearest (``quantize_tensor``), the default.

With ``awq`` (either method) the values come from ``source``: the checkpoint with
activation-aware scales folded into its RMSNorm weights (``taalasc.quant.awq``); the chip's
norm vectors must then be read from ``source`` too.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

from taalasc.errors import QuantizationError
from taalasc.quant.quantize import QuantizedTensor, QuantSpec, quantize_tensor

METHODS = ("rtn", "gptq")


def spec_of(qt: QuantizedTensor) -> QuantSpec:
    """The QuantSpec that describes existing codes."""
    return QuantSpec(qt.bits, qt.group_size, asymmetric=qt.asymmetric, ternary=qt.ternary)


def native_specs(ckpt: Any) -> dict[str, QuantSpec]:
    """name -> QuantSpec of the tensors whose stored codes the chip can take as they are.

    Reads only headers (a checkpoint's ``native_spec(name)``), never weights."""
    probe: Callable[[str], QuantSpec | None] | None = getattr(ckpt, "native_spec", None)
    if probe is None:
        return {}
    out = {}
    for name, info in ckpt.tensors.items():
        if len(info.shape) == 2:
            spec = probe(name)
            if spec is not None:
                out[name] = spec
    return out


class TensorQuantizer:
    """``quantizer(name, spec)`` -> the QuantizedTensor of ``name`` under ``policy``
    (a BitPolicy; None is plain round to nearest).

    ``native``: take the checkpoint's own codes where ``spec`` is their format.
    """

    def __init__(self, ckpt: Any, policy: Any, progress=None):
        self.ckpt = ckpt
        self.method = getattr(policy, "method", "rtn")
        if self.method not in METHODS:
            raise QuantizationError(f"method must be one of {', '.join(METHODS)}, "
                                    f"not {self.method!r}")
        self.native = bool(getattr(policy, "native", False))
        self._native = native_specs(ckpt) if self.native else {}
        self._policy = policy
        self._progress = progress
        self._hessians: dict | None = None
        self.awq = bool(getattr(policy, "awq", False))
        self._source = None if self.awq else ckpt   # the AWQ view, made on first use

    @property
    def source(self) -> Any:
        """What the chip's values are made from: the checkpoint, or with --awq its view with
        the scales folded in (norm vectors included: read the chip's 1-D constants here)."""
        if self._source is None:
            from taalasc.quant.awq import ScaledCheckpoint, search_scales
            from taalasc.quant.quantize import resolve_group_size

            policy = self._policy

            def spec_of(name: str) -> QuantSpec:
                inp = int(self.ckpt.tensors[name].shape[1])
                return QuantSpec(policy.default_bits,
                                 resolve_group_size(name, inp, policy.group_size),
                                 asymmetric=policy.asymmetric)

            scales = search_scales(self.ckpt, self.hessians(), spec_of, set(self._native))
            self._source = ScaledCheckpoint(self.ckpt, scales)
        return self._source

    def __getstate__(self) -> dict:
        # Sent to die workers: the progress callback (a closure over the terminal) stays here.
        return {**self.__dict__, "_progress": None}

    def for_tensors(self, names) -> "TensorQuantizer":
        """A copy that carries only the Hessians of ``names``: what one die worker needs
        (a compile sends every die its own, not the whole model's)."""
        part = copy.copy(self)
        if self._hessians is not None:
            keep = set(names)
            part._hessians = {n: h for n, h in self._hessians.items() if n in keep}
        return part

    def hessians(self) -> dict:
        """Hessians of every linear's input on the calibration sample, computed once."""
        if self._hessians is None:
            from taalasc.quant.calib import calibration_hessians
            self._hessians = calibration_hessians(self.ckpt, self._policy, self._progress)
        return self._hessians

    def is_native(self, name: str, spec: QuantSpec) -> bool:
        return self._native.get(name) == spec

    def __call__(self, name: str, spec: QuantSpec) -> QuantizedTensor:
        if self.is_native(name, spec):
            qt = self.ckpt.native(name)
            if qt is None or spec_of(qt) != spec:
                raise QuantizationError(f"tensor {name!r}: the checkpoint's native codes do not "
                                        f"match the planned {spec}")
            return qt
        source = self.source
        values = source.read(name)
        if self.method == "gptq":
            hessian = self.hessians().get(name)
            if hessian is not None:
                from taalasc.quant.gptq import gptq_quantize
                if self.awq:
                    hessian = source.hessian(name, hessian)
                return gptq_quantize(name, values, hessian, spec)
        return quantize_tensor(name, values, spec)
