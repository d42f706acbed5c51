"""Bench: `taalasc verify` through the API, with the wall time of each of its phases.

    python bench/verify_phases.py OUT MODEL [--jobs N] [--format gds|oas] [--min-top1 X]
                                  [--tokens "1 2 3"]

Runs ``taalasc.verify`` (what the CLI runs) with a progress hook and prints one JSON object:
``passed``, ``checks`` and ``phases_s``, the seconds between verify's progress points:

  * rebuild: the compile made again from the recorded options (masks into a hash-only
    writer; every tensor quantized once and kept for the codes check);
  * extract: every die file read back and decoded, on ``--jobs`` processes;
  * compare_codes: each tensor's read-back codes against the rebuild's;
  * chip_model: the bit-accurate chip model on the read-back weights;
  * float_reference: the float model and the quality figures.

bench/run.py runs it under ``/usr/bin/time -v`` for the verify column and its peak RSS.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

STAGES = {"rebuild": "rebuild", "extract": "extract", "compare codes": "compare_codes",
          "simulate": "chip_model"}


def main(argv: list[str] | None = None) -> int:
    import taalasc

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("model")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--format", choices=("gds", "oas"), default=None)
    ap.add_argument("--min-top1", type=float, default=None)
    ap.add_argument("--tokens", default=None)
    args = ap.parse_args(argv)
    marks: dict[str, float] = {}    # phase -> time of its last progress point

    def progress(stage: str, done: int, total: int) -> None:
        if stage in STAGES:
            marks[STAGES[stage]] = time.perf_counter()

    t0 = time.perf_counter()
    result = taalasc.verify(args.out, args.model, format=args.format, jobs=args.jobs,
                            min_top1=args.min_top1, progress=progress,
                            tokens=None if args.tokens is None else
                            [int(t) for t in args.tokens.split()])
    marks["float_reference"] = time.perf_counter()
    phases, last = {}, t0
    for name in ("rebuild", "extract", "compare_codes", "chip_model", "float_reference"):
        if name in marks:
            phases[name] = round(marks[name] - last, 1)
            last = marks[name]
    print(json.dumps({"passed": result.passed, "phases_s": phases,
                      "checks": [f"{c.name}: {'ok' if c.passed else 'FAIL'} {c.detail}"
                                 for c in result.checks]}))
    return 0 if result.passed else 2


if __name__ == "__main__":
    sys.exit(main())
