"""Emit masks: the two custom layers (top via, top metal) as GDSII / OASIS, read-back and DRC."""

from taalasc.emit.drc import Violation, check_file, check_rects
from taalasc.emit.readback import decode_tile_bits, read_rects, read_vias
from taalasc.emit.writer import DieMaskResult, DieMaskWriter, layer_properties_lyp

__all__ = ["DieMaskResult", "DieMaskWriter", "Violation", "check_file", "check_rects",
           "decode_tile_bits", "layer_properties_lyp", "read_rects", "read_vias"]
