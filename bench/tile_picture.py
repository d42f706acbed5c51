"""Render a window of a (merged) die file with KLayout's own viewer, headless, to a PNG.

    python bench/tile_picture.py MERGED/die0.gds OUT.png [--box X0 Y0 X1 Y1 (um)] [--lyp F]

The picture in docs/base.md was made this way from `taalasc merge` of the demo: the corner
of tile (0, 0) where the bit sites meet the tie column (met5 straps, via4, met4 landings and
tie pads, the standard-cell rows below). Needs the `klayout` Python package (test extra).
"""

from __future__ import annotations

import argparse

import klayout.lay as lay


# sky130 layers worth seeing, top down: (layer/datatype, name, colour, dither pattern)
SKY130 = [((72, 20), "met5", 0x3060ff, 5), ((59, 28), "met5 fill", 0x90a8ff, 9),
          ((71, 44), "via4", 0xff2020, 0), ((71, 20), "met4", 0xffa000, 1),
          ((70, 44), "via3", 0xa000a0, 0), ((70, 20), "met3", 0x20a040, 2),
          ((68, 20), "met1", 0x00c0c0, 3), ((67, 20), "li1", 0xc0c0c0, 4)]


def _sky130_colours(view) -> None:
    """Show only the layers above, each in its own colour (the default view hatches all
    layers alike)."""
    view.clear_layers()
    for (layer, datatype), name, colour, pattern in SKY130:
        node = lay.LayerProperties()
        node.source = f"{layer}/{datatype}@1"
        node.name = f"{name} {layer}/{datatype}"
        node.fill_color = node.frame_color = colour
        node.dither_pattern = pattern
        node.transparent = False
        view.insert_layer(view.end_layers(), node)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("gds")
    ap.add_argument("png")
    ap.add_argument("--box", nargs=4, type=float, default=(145.0, 98.0, 160.0, 110.0),
                    metavar=("X0", "Y0", "X1", "Y1"), help="window in um")
    ap.add_argument("--lyp", default=None, help="KLayout layer properties (.lyp)")
    ap.add_argument("--size", nargs=2, type=int, default=(1200, 1000))
    args = ap.parse_args()
    view = lay.LayoutView()
    view.load_layout(args.gds, True)
    if args.lyp:
        view.load_layer_props(args.lyp)
    if not args.lyp:
        _sky130_colours(view)
    view.max_hier()
    import klayout.db as db

    view.zoom_box(db.DBox(*args.box))
    view.save_image(args.png, *args.size)


if __name__ == "__main__":
    main()
