"""The scale bench: compile checkpoints of growing size and measure against baselines.

    python bench/run.py --sizes 10M,50M,200M,1B --out bench/results [--jobs N]

For every size, in one run: generate a BF16 checkpoint (bench/bigmodel.py), then measure
  * baseline read+quantize: plain numpy reads every tensor and makes 4-bit group codes;
  * compile: `taalasc compile` on base_array/sky130-reticle.yaml (a child process, so its peak
    RSS is measured with getrusage(RUSAGE_CHILDREN) and /usr/bin/time -v when present);
  * bytes per weight bit of GDS and OASIS, against numpy writing the same number of bytes
    and gdstk writing the same number of via rectangles (measured on a sample, scaled);
  * verify (`taalasc verify`) throughput and peak memory, up to --verify-max parameters;
  * diff against KLayout XOR through bench/bench_diff.py when it is present;
  * `taalasc estimate` wall time for Llama 3.1 405B (header-only: no weights exist), and the
    time a 405 B-parameter compile would take at the measured compile throughput.
Results: <out>/bench-<timestamp>.json and .md (and latest.json / latest.md), with the machine.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bigmodel import param_count, write_big_llama  # noqa: E402

BASE = HERE.parent / "base_array" / "sky130-reticle.yaml"  # the built-in sky130-reticle
TAALASC = [sys.executable, "-c", "import sys; from taalasc.cli import main; sys.exit(main(sys.argv[1:]))"]
SIZE_405B = 405e9


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), platform.processor())
    mem = next((int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text()
                .splitlines() if line.startswith("MemTotal")), 0)
    import gdstk
    return {"nproc": os.cpu_count(), "cpu": cpu, "ram_bytes": mem,
            "python": platform.python_version(), "numpy": np.__version__,
            "gdstk": gdstk.__version__, "platform": platform.platform()}


def run_child(argv: list[str], stdout: bool = False) -> dict:
    """Run a command; wall seconds and peak RSS (largest process) in bytes (and what it
    printed, with ``stdout``)."""
    timed = shutil.which("time") and Path("/usr/bin/time").exists()
    cmd = (["/usr/bin/time", "-v"] if timed else []) + argv
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    if m:
        rss = int(m[1]) * 1024
    elif rss <= before * 1024:
        rss = None  # an earlier, bigger child hides this one's peak
    out = {"argv": argv, "returncode": proc.returncode, "wall_s": wall, "peak_rss_bytes": rss,
           "stderr_tail": [line for line in proc.stderr.splitlines()
                           if not line.startswith("\t")][-3:] if proc.returncode else []}
    if stdout:
        out["stdout"] = proc.stdout
    return out


def baseline_read_quantize(model: Path, bits: int = 4, group: int = 32) -> float:
    """Plain numpy: read each BF16 tensor, widen to float32, make symmetric group codes."""
    from taalasc.model import open_checkpoint

    ckpt = open_checkpoint(model)
    t0 = time.perf_counter()
    q = 2 ** (bits - 1)
    for info in ckpt.tensors.values():
        raw = np.fromfile(info.file, dtype=np.uint16, count=info.numel, offset=info.offset)
        w = (raw.astype(np.uint32) << 16).view(np.float32)
        if len(info.shape) == 2 and info.shape[1] % group == 0:
            g = w.reshape(-1, group)
            scale = np.abs(g).max(axis=1, keepdims=True) / q
            scale[scale == 0] = 1
            codes = np.clip(np.rint(g / scale), -q, q - 1).astype(np.int8)
            del codes, g, scale
        del raw, w
    return time.perf_counter() - t0


def baseline_numpy_write(nbytes: int, folder: Path) -> float:
    block = np.random.default_rng(0).integers(0, 256, 1 << 24, dtype=np.uint8)
    t0 = time.perf_counter()
    with open(folder / "numpy-write.bin", "wb") as fh:
        left = nbytes
        while left > 0:
            n = min(left, block.size)
            block[:n].tofile(fh)
            left -= n
        fh.flush()
        os.fsync(fh.fileno())
    wall = time.perf_counter() - t0
    (folder / "numpy-write.bin").unlink()
    return wall


def gdstk_rects_per_s(folder: Path, sample: int = 1_000_000, per_cell: int = 2048) -> float:
    """gdstk writing `sample` 800 nm via squares, in cells of `per_cell` (a tile's sites)."""
    import gdstk

    t0 = time.perf_counter()
    writer = gdstk.GdsWriter(folder / "gdstk-sample.gds", unit=1e-9, precision=1e-9)
    rng = np.random.default_rng(0)
    for c in range(sample // per_cell):
        cell = gdstk.Cell(f"C{c}")
        xy = rng.integers(0, 100_000, (per_cell, 2)) * 5
        for x, y in xy.tolist():
            cell.add(gdstk.rectangle((x, y), (x + 800, y + 800), layer=71, datatype=44))
        writer.write(cell)
    writer.close()
    wall = time.perf_counter() - t0
    (folder / "gdstk-sample.gds").unlink()
    return (sample // per_cell) * per_cell / wall


def bench_size(size: str, work: Path, jobs: int, verify_max: float, keep: bool,
               diff: bool = True, klayout: bool = True,
               verify_tokens: str | None = None, verify_min_top1: float = 0.0,
               fmt: str | None = None, max_dies: int | None = None) -> dict:
    model = work / f"model-{size}"
    params = param_count(size)
    row: dict = {"size": size, "parameters": params}
    t0 = time.perf_counter()
    if not (model / "config.json").exists():
        write_big_llama(model, size)
    row["generate_s"] = time.perf_counter() - t0
    row["baseline_read_quantize_s"] = baseline_read_quantize(model)

    out = work / f"out-{size}"
    compiled = run_child([*TAALASC, "compile", str(model), "--base",
                          str(BASE), "-o", str(out), "--force", "--quiet", "--jobs", str(jobs)]
                         + (["--format", fmt] if fmt else [])
                         + (["--max-dies", str(max_dies)] if max_dies else []))
    row["output_bytes"] = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) \
        if out.exists() else 0
    row["compile"] = compiled
    if compiled["returncode"] != 0:
        if not keep:
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(model, ignore_errors=True)
        return row
    manifest = json.loads((out / "manifest.json").read_text())
    bits = sum(d["bit_vias"] for d in manifest["dies"])
    gds = sum(p.stat().st_size for p in out.glob("die*.gds"))
    oas = sum(p.stat().st_size for p in out.glob("die*.oas"))
    row.update(dies=len(manifest["dies"]), weight_bits=bits, gds_bytes=gds, oas_bytes=oas,
               gds_bytes_per_bit=gds / bits, oas_bytes_per_bit=oas / bits,
               compile_weights_per_s=params / compiled["wall_s"],
               compile_vs_read_quantize=compiled["wall_s"] / row["baseline_read_quantize_s"],
               baseline_numpy_write_s=baseline_numpy_write(gds + oas, work))
    row["gdstk_rects_per_s"] = gdstk_rects_per_s(work)
    row["gdstk_write_same_vias_s"] = bits / row["gdstk_rects_per_s"]
    if params <= verify_max:
        # verify_phases.py runs taalasc.verify (what the CLI runs) and prints its phases
        ver = run_child([sys.executable, str(Path(__file__).with_name("verify_phases.py")),
                         str(out), str(model), "--jobs", str(jobs),
                         "--min-top1", str(verify_min_top1)]
                        + (["--tokens", verify_tokens] if verify_tokens else [])
                        + (["--format", fmt] if fmt else []), stdout=True)
        printed = ver.pop("stdout").strip().splitlines()
        row["verify"] = ver
        row["verify_tokens"] = verify_tokens or "default (16)"
        if ver["returncode"] in (0, 2) and printed:
            checks = json.loads(printed[-1])
            row["verify_passed"] = checks["passed"]
            row["verify_checks"] = checks["checks"]
            row["verify_phases_s"] = checks["phases_s"]
        row["verify_weights_per_s"] = params / ver["wall_s"]
    else:
        row["verify_note"] = f"not run (> --verify-max {verify_max:,.0f} params)"
    # Every die of these compiles is a full reticle die, so one full-die diff per run says
    # it all; KLayout's XOR of a full die takes minutes, too long to repeat per size.
    try:
        row["diff"] = (_diff(out, work, klayout) if diff else
                       {"summary": "see the first row (the same full die of the base)"})
    except Exception as exc:  # the diff bench is optional here; record, do not stop
        row["diff"] = {"error": f"{type(exc).__name__}: {exc}"}
    if not keep:  # multi-GB: never leave model or masks behind
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(model, ignore_errors=True)
    return row


def _diff(out: Path, work: Path, klayout: bool) -> dict:
    """bench_diff's comparison on a full die of the compile's base; without KLayout when its
    XOR is too slow to wait for."""
    import bench_diff

    try:
        row = bench_diff.measure(out, None, work, klayout=klayout)
    finally:
        for path in work.glob("bench-die-[abc].*"):
            path.unlink()
    if not klayout:
        row["summary"] = (f"{row['taalasc_s']:.1f} s (3,000 flips); KLayout XOR not run "
                          "(--no-klayout), see bench/results/diff.md")
    return row


def _checks(row: dict) -> str:
    """'codes ok, datapath ok, quality FAIL' from verify's JSON report."""
    return ", ".join(c.split(":", 1)[0] + (" ok" if ": ok" in c else " FAIL")
                     for c in row.get("verify_checks", []) if not c.startswith("model"))


def _phases(row: dict) -> str:
    """'; rebuild 480 s, extract 700 s, ...' from verify_phases.py's figures."""
    phases = row.get("verify_phases_s") or {}
    return ("; " + ", ".join(f"{k.replace('_', ' ')} {v:,.0f} s" if v >= 10 else
                             f"{k.replace('_', ' ')} {v:.1f} s" for k, v in phases.items())
            if phases else "")


def _mb(x) -> str:
    return "n/a" if x is None else f"{x / 2**20:,.0f}"


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"# taalasc scale bench ({result['started']})", "",
             f"Machine: {m['cpu']}, {m['nproc']} cores, {m['ram_bytes'] / 2**30:.1f} GiB RAM; "
             f"Python {m['python']}, numpy {m['numpy']}, gdstk {m['gdstk']}; "
             f"`--jobs {result['jobs']}`, base `{BASE.name}`, masks "
             f"{result.get('format', 'gds+oas')}.", "",
             "| size | params | dies | compile s | weights/s | × read+quant | peak RSS MB | "
             "GDS B/bit | OAS B/bit | numpy write s | gdstk same vias s (1M sample, scaled) | verify s | "
             "verify peak MB | diff |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        c = r["compile"]
        if c["returncode"] != 0:
            lines.append(f"| {r['size']} | {r['parameters']:,} | compile failed: "
                         f"{' '.join(c['stderr_tail'])} |")
            continue
        v = r.get("verify")
        vtext = (r.get("verify_note", "not run") if v is None else
                 f"{v['wall_s']:.1f} = {r['parameters'] / v['wall_s'] / 1e6:.2f} M weights/s "
                 f"({_checks(r)}{_phases(r)})" if v["returncode"] in (0, 2) else
                 f"failed: {' '.join(v['stderr_tail'])}")
        diff = r.get("diff")
        dtext = "n/a" if not diff else diff.get("summary", diff.get("error", "see JSON"))
        lines.append(
            f"| {r['size']} | {r['parameters']:,} | {r['dies']} | {c['wall_s']:.1f} | "
            f"{r['compile_weights_per_s']:,.0f} | {r['compile_vs_read_quantize']:.1f} "
            f"(base {r['baseline_read_quantize_s']:.2f} s) | {_mb(c['peak_rss_bytes'])} | "
            f"{r['gds_bytes_per_bit']:.3f} | {r['oas_bytes_per_bit']:.3f} | "
            f"{r['baseline_numpy_write_s']:.2f} | {r['gdstk_write_same_vias_s']:.1f} | {vtext} | "
            f"{_mb(v['peak_rss_bytes']) if v else 'n/a'} | {dtext} |")
    best = max((r for r in result["rows"] if "compile_weights_per_s" in r),
               key=lambda r: r["parameters"], default=None)
    if best:
        hours = SIZE_405B / best["compile_weights_per_s"] / 3600
        lines += ["", f"405 B parameters at the {best['size']} throughput "
                      f"({best['compile_weights_per_s']:,.0f} weights/s, {m['nproc']} cores): "
                      f"{hours:,.1f} h on this machine, {hours * m['nproc']:,.0f} core-hours."]
    est = result.get("estimate_405b")
    if est:
        lines += ["", f"`taalasc estimate --preset llama-3.1-405b --base hc1-n6` (header only): "
                      f"{est['wall_s']:.2f} s wall, exit {est['returncode']}, peak RSS "
                      f"{_mb(est['peak_rss_bytes'])} MB."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10M,50M,200M,1B")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--work", type=Path, default=Path("/tmp/taalasc-bench"))
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--verify-max", type=float, default=2e9,
                    help="run verify only for models up to this many parameters")
    ap.add_argument("--keep", action="store_true",
                    help="keep the generated models and compile outputs in --work")
    ap.add_argument("--no-diff", action="store_true", help="skip the diff column")
    ap.add_argument("--no-klayout", action="store_true",
                    help="diff column without KLayout's XOR (minutes per full die)")
    ap.add_argument("--format", dest="fmt", choices=["gds", "oas"], default=None,
                    help="compile one mask format only (default: compile's auto); verify "
                         "and the diff column read it")
    ap.add_argument("--max-dies", type=int, default=None,
                    help="compile's --max-dies: sky130-reticle allows 160 dies, an 8B model "
                         "at 4 bits needs about 1,050")
    ap.add_argument("--verify-tokens", default=None,
                    help="token ids for verify's chip model, e.g. '1 2 3 4' (default: its 16)")
    # The bench's weights are random: the logits are nearly flat, so which token wins is
    # noise (top-1 agreement 0.25-0.75 across sizes) while cosine and KL stay meaningful.
    ap.add_argument("--verify-min-top1", type=float, default=0.0,
                    help="verify's --min-top1 (0: random weights make top-1 agreement noise)")
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    result = {"started": stamp, "machine": machine(), "jobs": args.jobs, "base": BASE.name,
              "format": args.fmt or "gds+oas",
              "verify_min_top1": args.verify_min_top1, "rows": [],
              "estimate_405b": run_child([*TAALASC, "estimate", "--preset", "llama-3.1-405b",
                                          "--base", "hc1-n6", "--json"])}
    for size in args.sizes.split(","):
        print(f"bench {size} ...", file=sys.stderr, flush=True)
        result["rows"].append(bench_size(size.strip(), args.work, args.jobs, args.verify_max,
                                         args.keep, diff=not result["rows"] and not args.no_diff,
                                         klayout=not args.no_klayout,
                                         verify_tokens=args.verify_tokens,
                                         verify_min_top1=args.verify_min_top1,
                                         fmt=args.fmt, max_dies=args.max_dies))
        text = json.dumps(result, indent=1, default=str) + "\n"
        for name in (f"bench-{stamp}.json", "latest.json"):
            (args.out / name).write_text(text)
        md = markdown(result)
        for name in (f"bench-{stamp}.md", "latest.md"):
            (args.out / name).write_text(md)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
