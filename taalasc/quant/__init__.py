"""Quantization: symmetric integer codes with fp16 group scales, and mixed-precision policies."""

from taalasc.quant.policy import (AutoMixed, BitPlan, BitPolicy, BitRule, TensorPlan,
                                  assign_bits, parse_rule, plan_bits, quantize_model)
from taalasc.quant.quantize import (QuantizedTensor, QuantSpec, quantize_tensor,
                                    resolve_group_size)
from taalasc.quant.report import QuantReport, TensorReport, quantize_report

__all__ = [
    "AutoMixed", "BitPlan", "BitPolicy", "BitRule", "QuantReport", "QuantSpec",
    "QuantizedTensor", "TensorPlan", "TensorReport", "assign_bits", "parse_rule", "plan_bits",
    "quantize_model", "quantize_report", "quantize_tensor", "resolve_group_size",
]
