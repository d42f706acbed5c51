"""`python -m taalasc`: the same command line as the `taalasc` script."""

from taalasc.cli import run

run()
