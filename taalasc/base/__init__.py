"""The base die: the prefabricated chip under the two custom layers, drawn as real geometry.

recipe.py  the PDK's layers under the custom via, its via-stack rules and standard cells
cells.py   the standard-cell library files (GDS, LEF, SPICE) from their Python package
rows.py    standard-cell rows under a weight tile: which cell goes where
tile.py    one weight tile of the base: landings, tie pads, rows, pin stacks
frame.py   the die around the tiles: boundary, seal ring, supply rings, power grid, ports
build.py   the whole base die as a GDSII library, and what it is made of (cells, area)
merge.py   base die + one compiled die's custom layers -> one GDSII file
"""
