"""Emit masks: the two custom layers (top via, top metal) as GDSII / OASIS, read-back and DRC."""

from taalasc.emit.check import check_die
from taalasc.emit.drc import Violation, check_file, check_rects
from taalasc.emit.readback import decode_tile_bits, read_rects, read_vias
from taalasc.emit.tiles import RenderedTile, render_tile, render_tiles
from taalasc.emit.writer import DieLayout, DieMaskResult, DieMaskWriter, layer_properties_lyp

__all__ = ["DieLayout", "DieMaskResult", "DieMaskWriter", "RenderedTile", "Violation",
           "check_die", "check_file", "check_rects", "decode_tile_bits", "layer_properties_lyp",
           "read_rects", "read_vias", "render_tile", "render_tiles"]
