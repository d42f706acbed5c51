"""`python -m taalasc`: the same entry point as the `taalasc` command."""

from taalasc.cli import run

run()
