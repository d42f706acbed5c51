"""Bench: `taalasc diff` against KLayout's XOR at its best, on the same two mask files, in one run.

    nice -n 10 python bench/bench_diff.py [--tiles 160x32] [--flips 3000,20] [--format gds|oas]
                                          [--tile-um 1000] [--out bench/results]

Builds a die of >= 10 million vias (a sky130 base array with a 160 x 32 grid of the demo's
2048-site tiles, written by the bench into a temporary folder; random bits, seed 0) with
taalasc's own mask writer in ``--format``, then for each of ``--flips`` the same die with that
many random bits inverted (each moves one via from one strap to the other), also written by
the writer, as a compile of a changed checkpoint is. Each of these runs in a child process of
its own, timed with its peak RSS, reading both files:

  * taalasc: ``diff_masks(A, B)`` (our readers, hashing, diffing, counting);
  * KLayout deep: both layers as hierarchical regions in one ``DeepShapeStore``,
    ``(A ^ B).merged().count()`` (what ``strmxor -u`` does);
  * KLayout tiled: a ``TilingProcessor`` with 2 threads and ``--tile-um`` tiles, the XOR of
    each tile clipped to it, merged at the end (what ``strmxor -n 2 -p`` does; the strmxor
    binary ships in neither the distribution's klayout package nor the Python one);
  * KLayout flat: ``Region(top.begin_shapes_rec(layer))`` of each layer, the same XOR.

It checks that every mode's counts equal taalasc's on both layers, gives each ratio against
the fastest KLayout mode of the same run, and writes bench/results/diff.json and diff.md with
the machine (nproc, CPU model, memory, load average). Not part of the tests.
``measure(out_dir, model, work)`` is the same comparison on a compile folder's die 0, used by
bench/run.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEMO_BASE = HERE.parent / "base_array" / "sky130-demo.yaml"


def machine() -> dict:
    """run.machine() plus the load average and KLayout's version (this bench times KLayout)."""
    import klayout.db as kdb
    from run import machine as base_machine

    return base_machine() | {"load_average": list(os.getloadavg()),
                             "klayout": getattr(kdb, "__version__", "unknown")}


def bench_base_yaml(folder: Path, columns: int, rows: int) -> Path:
    """The demo base array with a bigger tile grid and die (same tiles, same PDK rules)."""
    import yaml

    data = yaml.safe_load(DEMO_BASE.read_text())
    grid = data["tile_grid"]
    data["name"] = f"sky130-bench-{columns}x{rows}"
    grid["columns"], grid["rows"] = columns, rows
    die = data["die"]  # grown to fit the grid, never smaller than the demo die (SRAM room)
    die["width_nm"] = max(die["width_nm"], grid["origin_nm"][0] * 2 + columns * grid["pitch_x_nm"])
    die["height_nm"] = max(die["height_nm"], grid["origin_nm"][1] * 2 + rows * grid["pitch_y_nm"])
    path = folder / "bench-base.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def write_die(base, folder: Path, stem: str, seed: int = 0, fmt: str = "gds", flips: int = 0,
              flip_seed: int = 1) -> tuple[Path, int]:
    """Every tile programmed with random bits by taalasc's mask writer: (GDS path, vias);
    with ``fmt`` oas the OASIS file is written beside it. ``flips`` distinct random bits of
    the die (``flip_seed``) are inverted first: each moves one via to the other strap, as a
    compile of a changed checkpoint would."""
    from taalasc.custom.names import compile_tag
    from taalasc.custom.writer import DieMaskWriter

    g, sites = base.tile_grid, base.weight_tile.sites
    rng = np.random.default_rng(seed)
    formats = ("gds",) if fmt == "gds" else ("gds", "oas")
    writer = DieMaskWriter(base, 0, folder, stem=stem, formats=formats, tag=compile_tag("0" * 64))
    flip = np.random.default_rng(flip_seed).choice(g.columns * g.rows * sites, flips,
                                                    replace=False) if flips else np.zeros(0, int)
    per_tile = np.bincount(flip // sites, minlength=g.columns * g.rows)
    flip = np.sort(flip)
    done = 0
    for k in range(g.columns * g.rows):
        bits = rng.integers(0, 2, size=sites, dtype=np.uint8)
        bits[flip[done:done + per_tile[k]] % sites] ^= 1
        done += per_tile[k]
        writer.add_tile(k % g.columns, k // g.columns, bits)
    result = writer.close()
    return result.files["gds"], result.via_count


KLAYOUT_MODES = ("deep", "tiled", "flat")
# KLayout's flat XOR is never the fastest (2.3x its deep mode at 11 M vias, 3.1 GB): above
# this many vias a die's comparison leaves it out (a 34.9 M-via 8 B die would need ~10 GB).
FLAT_MAX_VIAS = 20_000_000
TILE_UM = 1000.0


def klayout_xor(a: Path, b: Path, layers, mode: str = "flat", tile_um: float = TILE_UM
                ) -> tuple[dict, float]:
    """KLayout's XOR polygon count per layer in ``mode`` (KLAYOUT_MODES), and the wall time
    (read + XOR)."""
    import klayout.db as kdb

    start = time.perf_counter()
    la, lb = kdb.Layout(), kdb.Layout()
    la.read(str(a))
    lb.read(str(b))
    counts = {}
    dss = kdb.DeepShapeStore() if mode == "deep" else None
    for layer in layers:
        ia, ib = la.top_cell().begin_shapes_rec(la.layer(*layer)), \
            lb.top_cell().begin_shapes_rec(lb.layer(*layer))
        if mode == "tiled":
            tp = kdb.TilingProcessor()
            tp.input("a", ia)
            tp.input("b", ib)
            xor = kdb.Region()
            tp.output("o", xor)
            tp.dbu, tp.threads = la.dbu, 2
            tp.tile_size(tile_um, tile_um)
            tp.queue("_output(o, (a ^ b) & _tile, true)")   # clipped to the tile
            tp.execute("xor")
        else:
            ra, rb = (kdb.Region(ia, dss), kdb.Region(ib, dss)) if dss else \
                (kdb.Region(ia), kdb.Region(ib))
            xor = ra ^ rb
        counts[f"{layer[0]}/{layer[1]}"] = xor.merged().count()
    return counts, time.perf_counter() - start


def taalasc_diff(a: Path, b: Path) -> tuple[dict, float, dict]:
    """taalasc's XOR polygon count per layer, the wall time, and what else it reports."""
    from taalasc.diff import diff_masks

    start = time.perf_counter()
    d = diff_masks(a, b)
    seconds = time.perf_counter() - start
    return ({f"{t.layer[0]}/{t.layer[1]}": t.xor_polygons for t in d.layers}, seconds,
            {"changed_shapes": d.changed_shapes, "masks": d.masks,
             "tiles_skipped_identical": d.dies[0].refs_skipped})


def _one(argv: list[str]) -> int:
    """Child process: ``--one MODE A B LAYER... [--tile-um T]``; prints its result as JSON."""
    mode, a, b, *rest = argv
    tile_um = float(rest.pop(rest.index("--tile-um") + 1)) if "--tile-um" in rest else TILE_UM
    rest = [r for r in rest if r != "--tile-um"]
    layers = [tuple(int(v) for v in r.split("/")) for r in rest]
    if mode == "taalasc":
        counts, seconds, extra = taalasc_diff(Path(a), Path(b))
    else:
        (counts, seconds), extra = klayout_xor(Path(a), Path(b), layers, mode, tile_um), {}
    print(json.dumps({"counts": counts, "seconds": seconds, **extra}))
    return 0


def _timed(mode: str, a: Path, b: Path, layers, tile_um: float) -> dict:
    """One mode in a child process of its own: its counts, seconds inside, wall time, CPU
    time (user + system, all threads: on a machine shared with other jobs the steadier
    figure) and peak RSS, measured by /usr/bin/time (a child forked from this process would
    carry this process's peak RSS along)."""
    import subprocess

    argv = [sys.executable, str(Path(__file__).resolve()), "--one", mode, str(a), str(b),
            *[f"{l}/{d}" for l, d in layers], "--tile-um", str(tile_um)]
    with tempfile.NamedTemporaryFile("r") as usage:
        start = time.perf_counter()
        proc = subprocess.run(["/usr/bin/time", "-o", usage.name, "-f", "%U %S %M"] + argv,
                              capture_output=True, text=True)
        wall = time.perf_counter() - start
        user, system, rss_kb = usage.read().split()[-3:]
    if proc.returncode:
        return {"error": " ".join(proc.stderr.strip().splitlines()[-2:])
                or f"exit {proc.returncode}"}
    inner = json.loads(proc.stdout.strip().splitlines()[-1])
    return inner | {"wall_s": round(wall, 3), "seconds": round(inner["seconds"], 3),
                    "cpu_s": round(float(user) + float(system), 3),
                    "peak_rss_bytes": int(rss_kb) * 1024}


def compare(a: Path, b: Path, pdk, vias: int, klayout_max_vias: int = 40_000_000,
            modes: tuple[str, ...] = KLAYOUT_MODES, tile_um: float = TILE_UM) -> dict:
    """Time taalasc diff and KLayout's XOR in ``modes`` on the same two files, each in its own
    process; counts must agree. Ratios are against the fastest KLayout mode (wall time)."""
    layers = [(pdk.layers.via.gds_layer, pdk.layers.via.gds_datatype),
              (pdk.layers.top_metal.gds_layer, pdk.layers.top_metal.gds_datatype)]
    ours = _timed("taalasc", a, b, layers, tile_um)
    if "error" in ours:
        raise RuntimeError(f"taalasc diff failed: {ours['error']}")
    row = {"vias": vias, "file_bytes": Path(a).stat().st_size, "taalasc_s": ours["wall_s"],
           "taalasc_cpu_s": ours["cpu_s"],
           "taalasc_rss_bytes": ours["peak_rss_bytes"], "taalasc_counts": ours["counts"],
           "changed_shapes": ours["changed_shapes"], "masks": ours["masks"],
           "tiles_skipped_identical": ours["tiles_skipped_identical"]}
    if not modes:
        row["klayout"] = "not run"
        row["summary"] = f"{ours['wall_s']:.1f} s (KLayout XOR not run)"
        return row
    if vias > klayout_max_vias:
        row["klayout"] = f"skipped: {vias:,} vias > {klayout_max_vias:,}"
        row["summary"] = f"{ours['wall_s']:.1f} s (KLayout XOR skipped above {klayout_max_vias:,} vias)"
        return row
    row["klayout_modes"] = {}
    for mode in modes:
        got = _timed(mode, a, b, layers, tile_um)
        if "error" not in got:
            got["counts_identical"] = all(ours["counts"].get(k, 0) == v
                                          for k, v in got["counts"].items())
            got["speedup"] = round(got["wall_s"] / ours["wall_s"], 1)
            got["cpu_ratio"] = round(got["cpu_s"] / ours["cpu_s"], 1)
        row["klayout_modes"][mode] = got
    ran = {m: r for m, r in row["klayout_modes"].items() if "error" not in r}
    fastest = min(ran, key=lambda m: ran[m]["wall_s"])
    row.update({"klayout_fastest": fastest, "klayout_s": ran[fastest]["wall_s"],
                "klayout_counts": ran[fastest]["counts"],
                "counts_identical": all(r["counts_identical"] for r in ran.values()),
                "speedup": ran[fastest]["speedup"]})
    row["summary"] = (f"{ours['wall_s']:.1f} s vs KLayout's fastest XOR ({fastest}) "
                      f"{row['klayout_s']:.1f} s ({row['speedup']}×), counts "
                      f"{'equal' if row['counts_identical'] else 'DIFFER'} in every mode")
    return row


WHOLE_DIE_FLIPS = 0.10   # of a die's bits: every chunk cell of every tile changes (57 %)


def measure(out_dir: Path, model: Path, work: Path, flips: int = 3000,
            klayout: bool = True, whole: bool = True) -> dict:
    """bench/run.py hook: a full die of the compile's base array written twice by taalasc's
    writer (random bits; B with ``flips`` bits inverted, as a compile of a changed checkpoint
    writes it), compared in the format the compile wrote. (B is not the compile's die 0
    edited by gdstk: every cell of a gdstk-written OASIS file is laid out unlike ours, and
    our reader takes those a record at a time, ~20 s for a reticle die.)"""
    from taalasc.extract.extract import base_of, read_manifest, written_format

    manifest = read_manifest(out_dir)
    base = base_of(manifest, out_dir)
    fmt = written_format(manifest)
    a, vias = write_die(base, work, "bench-die-a", fmt=fmt)
    b, _ = write_die(base, work, "bench-die-b", fmt=fmt, flips=flips)
    if fmt == "oas":
        a, b = a.with_suffix(".oas"), b.with_suffix(".oas")
    modes = tuple(m for m in KLAYOUT_MODES if klayout and (m != "flat" or vias <= FLAT_MAX_VIAS))
    row = compare(a, b, base.pdk, vias, modes=modes)
    row["flips"] = flips
    if whole:   # a new checkpoint changes every tile
        g = base.tile_grid
        many = int(g.columns * g.rows * base.weight_tile.sites * WHOLE_DIE_FLIPS)
        c, _ = write_die(base, work, "bench-die-c", fmt=fmt, flips=many)
        c = c.with_suffix(".oas") if fmt == "oas" else c
        got = compare(a, c, base.pdk, vias, modes=tuple(m for m in modes if m != "flat"))
        got["flips"] = many
        row["whole_die"] = got
        row["summary"] += (f"; every tile changed ({got['flips']:,} flips): "
                           f"{got['summary']}")
    return row


def _mb(x) -> str:
    return "n/a" if x is None else f"{x / 2**20:,.0f}"


def markdown(result: dict) -> str:
    m = result["machine"]
    fmt = result.get("format", "gds")
    lines = [
        f"# taalasc diff vs KLayout XOR ({result['started']})", "",
        f"Machine: {m['cpu']}, {m['nproc']} cores, {m['ram_bytes'] / 2**30:.1f} GiB RAM, "
        f"load average at start {', '.join(f'{x:.2f}' for x in m['load_average'])}; "
        f"Python {m['python']}, numpy {m['numpy']}, gdstk {m['gdstk']}, "
        f"klayout {m['klayout']}.", "",
        f"Mask set: one sky130 die, {result['tiles']} tiles of 2048 sites, "
        f"{result['vias']:,} vias, {fmt.upper()} {result['file_bytes'] / 2**20:,.1f} MiB "
        f"(both written by taalasc's writer), random bits (written in "
        f"{result['build_s']:.0f} s). B = A with N random bits flipped. Every row ran in a "
        "process of its own (wall time and peak RSS of that process, reading both files).", "",
        "| flipped bits | tool | wall s | CPU s | peak RSS MB | taalasc's lead (wall) | "
        "(CPU) | via XOR polygons | top-metal XOR polygons | counts equal taalasc's |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in result["runs"]:
        lines.append(f"| {r['flips']:,} | **taalasc diff** | {r['taalasc_s']:.2f} | "
                     f"{r['taalasc_cpu_s']:.2f} | {_mb(r['taalasc_rss_bytes'])} | | | "
                     f"{r['taalasc_counts'].get('71/44', 0):,} | "
                     f"{r['taalasc_counts'].get('72/20', 0):,} | |")
        for mode, k in r.get("klayout_modes", {}).items():
            if "error" in k:
                lines.append(f"| | KLayout {mode} | failed: {k['error']} | | | | | | | |")
                continue
            best = " (fastest)" if mode == r["klayout_fastest"] else ""
            lines.append(f"| | KLayout {mode}{best} | {k['wall_s']:.2f} | {k['cpu_s']:.2f} | "
                         f"{_mb(k['peak_rss_bytes'])} | **{k['speedup']}×** | "
                         f"{k['cpu_ratio']}× | "
                         f"{k['counts'].get('71/44', 0):,} | {k['counts'].get('72/20', 0):,} | "
                         f"{k['counts_identical']} |")
    lines += ["", "taalasc: `diff_masks(A, B)` (reads both files with its own readers, hashes "
              "cells by content, diffs both layers, counts). KLayout deep: `Region(top."
              "begin_shapes_rec(layer), DeepShapeStore())` of each side, `(A ^ B).merged()."
              "count()`; tiled: `TilingProcessor`, 2 threads, "
              f"{result.get('tile_um', TILE_UM):g} µm tiles, `(a ^ b) & _tile` per tile, "
              "merged at the end; flat: `Region(top.begin_shapes_rec(layer))`. taalasc's lead "
              "= KLayout wall (CPU) time / taalasc's; the fastest mode is the one of least wall "
              "time. CPU time counts every thread, so the tiled mode's 2 threads show there.",
              ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiles", default="160x32", help="tile grid COLUMNSxROWS")
    parser.add_argument("--flips", default="3000,20",
                        help="comma-separated numbers of random bits to flip, one run each")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--keep", type=Path, default=None, help="keep the mask files here")
    parser.add_argument("--format", dest="fmt", choices=("gds", "oas"), default="gds",
                        help="format of both mask files")
    parser.add_argument("--modes", default=",".join(KLAYOUT_MODES),
                        help="KLayout modes to time, comma-separated")
    parser.add_argument("--tile-um", type=float, default=TILE_UM,
                        help="tile side of KLayout's tiled mode, µm")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--one"]:
        return _one(argv[1:])
    args = parser.parse_args(argv)
    modes = tuple(m for m in args.modes.split(",") if m)
    from taalasc.config import load_base_array

    columns, rows = (int(v) for v in args.tiles.lower().split("x"))
    result = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(),
              "tiles": f"{columns} x {rows}", "format": args.fmt, "tile_um": args.tile_um,
              "runs": []}
    work = Path(tempfile.mkdtemp(prefix="taalasc-bench-diff-"))
    try:
        base = load_base_array(bench_base_yaml(work, columns, rows))
        t0 = time.perf_counter()
        a_gds, vias = write_die(base, work, "a", fmt=args.fmt)
        a = a_gds.with_suffix(f".{args.fmt}")
        result.update(build_s=time.perf_counter() - t0, vias=vias, file_bytes=a.stat().st_size)
        print(f"built {vias:,} vias in {result['build_s']:.0f} s", file=sys.stderr)
        for k, flips in enumerate(int(v) for v in args.flips.split(",")):
            b_gds, _ = write_die(base, work, f"b{k}", fmt=args.fmt, flips=flips, flip_seed=1 + k)
            b = b_gds.with_suffix(f".{args.fmt}")
            run = compare(a, b, base.pdk, vias, klayout_max_vias=10**12, modes=modes,
                          tile_um=args.tile_um)
            result["runs"].append({"flips": flips, **run})
            print(f"{flips} flips: {run['summary']}", file=sys.stderr)
            if args.keep:
                args.keep.mkdir(parents=True, exist_ok=True)
                shutil.copy(b, args.keep / b.name)
            b_gds.unlink()
            b.unlink(missing_ok=True)
        if args.keep:
            shutil.copy(a, args.keep / a.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "diff" if args.fmt == "gds" else "diff-oas"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(result))
    print(markdown(result))
    return 0 if all(r.get("counts_identical", True) for r in result["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
