"""The two custom layers of one die: weight tiles (straps, tie vias, bit vias), dataflow
routes, fill, and the streaming die writer."""
