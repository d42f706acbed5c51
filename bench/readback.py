"""Bench: reading a compile's masks back, GDSII against OASIS, in one run.

    python bench/readback.py COMPILE_DIR [--jobs 1] [--repeat 1] [--out bench/results]

For each format the compile has (``--format both``), times ``extract(COMPILE_DIR, fmt)`` -
what verify's codes check, ``simulate`` from a folder and ``faults`` read: every die's file
parsed, flattened and decoded to codes - in a child process, with its wall time and peak RSS
(/usr/bin/time -v when present), and the parse alone (our reader, no flattening) per die
file. Results go to <out>/readback-<timestamp>.{json,md} and readback-latest.{json,md}, with
the machine (run.machine) and the load average. Run it with PYTHONPATH pointing at another
checkout to measure that one: the reader is whatever ``taalasc`` imports. Not part of the
tests.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import machine, run_child  # noqa: E402

EXTRACT = ("import sys, time; from taalasc.extract.extract import extract; t = time.perf_counter();"
           " e = extract(sys.argv[1], sys.argv[2], jobs=int(sys.argv[3]));"
           " print('VIAS', e.vias_read, 'DEFECTS', e.defect_count,"
           " 'SECONDS', time.perf_counter() - t)")
PARSE = ("import sys, time, json; from taalasc.formats.readback import read_library;"
         " out = []\nfor p in sys.argv[1:]:\n t = time.perf_counter(); read_library(p);"
         " out.append(time.perf_counter() - t)\nprint('PARSE', json.dumps(out))")


def measure(folder: Path, jobs: int, repeat: int) -> dict:
    manifest = json.loads((folder / "manifest.json").read_text())
    dies = manifest["dies"]
    out = {"folder": str(folder), "dies": len(dies), "jobs": jobs, "formats": {}}
    for fmt in ("gds", "oas"):
        files = [folder / d["files"][fmt] for d in dies if fmt in d.get("files", {})]
        if len(files) != len(dies):
            continue
        runs = []
        for _ in range(repeat):
            r = run_child([sys.executable, "-c", EXTRACT, str(folder), fmt, str(jobs)], stdout=True)
            words = r.pop("stdout").split()
            runs.append({**r, **dict(zip(words[::2], words[1::2]))})   # VIAS n DEFECTS n ...
        parse = run_child([sys.executable, "-c", PARSE, *map(str, files)], stdout=True)
        best = min(runs, key=lambda r: r["wall_s"])
        out["formats"][fmt] = {
            "bytes": sum(f.stat().st_size for f in files),
            "extract_wall_s": best["wall_s"], "extract_peak_rss_bytes": best["peak_rss_bytes"],
            "extract_all_wall_s": [r["wall_s"] for r in runs],
            "returncode": best["returncode"], "stderr_tail": best["stderr_tail"],
            "vias": int(best.get("VIAS", -1)), "defects": int(best.get("DEFECTS", -1)),
            "parse_s_per_die": json.loads(parse["stdout"].split("PARSE", 1)[1])
            if parse["returncode"] == 0 else [],   # an older checkout has no read_library
            "parse_peak_rss_bytes": parse["peak_rss_bytes"]}
    return out


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"# taalasc read-back bench ({result['stamp']})", "",
             f"Machine: {m['cpu']}, {m['nproc']} cores, {m['ram_bytes'] / 2**30:.1f} GiB; "
             f"load average before {result['load_before']}; `--jobs {result['jobs']}`; "
             f"{result['dies']} dies of `{result['folder']}`.", "",
             "| format | bytes | extract s | extract peak RSS MB | parse s per die |",
             "|---|---|---|---|---|"]
    for fmt, r in result["formats"].items():
        rss = r["extract_peak_rss_bytes"]
        rss = f"{rss / 2**20:,.0f}" if rss else "n/a"
        parse = ", ".join(f"{s:.2f}" for s in r["parse_s_per_die"])
        lines.append(f"| {fmt} | {r['bytes']:,} | {r['extract_wall_s']:.1f} | {rss} | {parse} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    load = os.getloadavg()
    result = {"stamp": stamp, "machine": machine(), "load_before": [round(v, 2) for v in load],
              **measure(args.folder, args.jobs, args.repeat)}
    args.out.mkdir(parents=True, exist_ok=True)
    text = markdown(result)
    for name in (f"readback-{stamp}", "readback-latest"):
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
        (args.out / f"{name}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
