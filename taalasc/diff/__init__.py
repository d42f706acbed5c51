"""Mask diff: what changed between two mask sets, and what a re-spin costs (`taalasc diff`)."""

from taalasc.diff.core import (LayerTotals, MaskDiff, count_shapes, diff_masks, over_threshold,
                               parse_max_changed)
from taalasc.diff.report import (heatmap_rgb, print_summary, to_html, to_json, to_markdown,
                                 write_heatmap, write_html, write_json, write_markdown, write_xor)

__all__ = ["LayerTotals", "MaskDiff", "count_shapes", "diff_masks", "heatmap_rgb",
           "over_threshold", "parse_max_changed", "print_summary", "to_html", "to_json",
           "to_markdown", "write_heatmap", "write_html", "write_json", "write_markdown", "write_xor"]
