"""Reports: area, timing, power, SRAM and cost as typed metrics with formulas and sources."""

from taalasc.report.area import PlacementFacts
from taalasc.report.estimate import build_report, estimate, report_for_compile
from taalasc.report.metrics import Metric, Report
from taalasc.report.shape import (ModelShape, header_bits, shape_from_checkpoint,
                                  shape_from_config, shape_from_config_file, shape_from_preset)
from taalasc.report.sram import Lora, lora_from_adapter, lora_from_rank

REPORT_FILE = "report.json"

__all__ = ["Lora", "Metric", "ModelShape", "PlacementFacts", "REPORT_FILE", "Report",
           "build_report", "estimate", "header_bits", "lora_from_adapter", "lora_from_rank",
           "report_for_compile", "shape_from_checkpoint", "shape_from_config",
           "shape_from_config_file", "shape_from_preset"]
