"""Placement: tensors -> tile-sized segments -> tiles along a space-filling curve."""

from taalasc.place.curve import CURVES, curve_order, gilbert
from taalasc.place.metrics import (placement_stats, rowmajor_wirelength_nm, tensor_span_nm,
                                   wirelength_nm)
from taalasc.place.overview import die_map_image, die_map_png, overview_image, overview_png
from taalasc.place.pack import pack_segment, unpack_segment
from taalasc.place.plan import (Placement, Segment, TensorSpec, TileSlot, plan_placement,
                                segments_of, tensor_specs)

__all__ = [
    "CURVES", "Placement", "Segment", "TensorSpec", "TileSlot", "curve_order", "gilbert",
    "die_map_image", "die_map_png", "overview_image", "overview_png", "pack_segment",
    "placement_stats", "plan_placement", "rowmajor_wirelength_nm", "segments_of",
    "tensor_span_nm", "tensor_specs", "unpack_segment",
    "wirelength_nm",
]
