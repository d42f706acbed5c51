"""Bench: `taalasc diff` against a KLayout XOR of the same two mask files, in one run.

    python bench/bench_diff.py [--tiles 160x32] [--flips 3000,20] [--out bench/results]

Builds a die of >= 10 million vias (a sky130 base array with a 160 x 32 grid of the demo's
2048-site tiles, written by the bench into a temporary folder; random bits, seed 0) with
taalasc's own mask writer, then copies with ``--flips`` bits flipped at random (each flip
moves one via from one strap to the other, written as new tile and chunk cells so the
hierarchy stays like the writer's). It then times

  * taalasc: ``diff_masks(A, B)`` (library call: reading both files, diffing, counting);
  * KLayout: read both layouts, ``Region(top.begin_shapes_rec(layer))`` for the via and the
    top-metal layer, ``(A ^ B).merged().count()``;

checks that the counts are identical on both layers, and writes bench/results/diff.json and
diff.md with the machine (nproc, CPU model, memory, load average). Not part of the tests.
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


def write_die(base, folder: Path, stem: str, seed: int = 0) -> tuple[Path, int]:
    """Every tile programmed with random bits by taalasc's mask writer: (path, vias)."""
    from taalasc.custom.names import compile_tag
    from taalasc.custom.writer import DieMaskWriter

    g, sites = base.tile_grid, base.weight_tile.sites
    rng = np.random.default_rng(seed)
    writer = DieMaskWriter(base, 0, folder, stem=stem, formats=("gds",), tag=compile_tag("0" * 64))
    for k in range(g.columns * g.rows):
        writer.add_tile(k % g.columns, k // g.columns,
                        rng.integers(0, 2, size=sites, dtype=np.uint8))
    result = writer.close()
    return result.files["gds"], result.via_count


def flip_bits(src: Path, dst: Path, flips: int, site_pitch_y_nm: int, seed: int = 1) -> int:
    """Copy a taalasc GDS with ``flips`` distinct random bits flipped; returns the flips made.

    A flip rewrites one chunk reference of one tile to a chunk cell with that via moved to
    the other strap (half a site pitch in y); changed tiles get new cell names.
    """
    import gdstk

    from taalasc.custom.names import PREFIX, TILE, chunk_name, parse_chunk

    lib = gdstk.read_gds(str(src), unit=1e-9)
    cells = {c.name: c for c in lib.cells}
    top = lib.top_level()[0]
    tiles = sorted((r for r in top.references if TILE.match(r.cell_name)),
                   key=lambda r: (r.origin[1], r.origin[0]))
    prefix = PREFIX.match(top.name).group()
    rng = np.random.default_rng(seed)
    chosen: dict[int, dict[int, set[int]]] = {}
    made = 0
    chunk_lists: dict[int, list[int]] = {}
    while made < flips:
        t = int(rng.integers(len(tiles)))
        if t not in chunk_lists:
            chunk_lists[t] = [k for k, r in enumerate(tiles[t].cell.references)
                              if parse_chunk(r.cell_name) is not None]
        chunks = chunk_lists[t]
        k = chunks[int(rng.integers(len(chunks)))]
        n = parse_chunk(tiles[t].cell.references[k].cell_name)[0]
        bit = int(rng.integers(n))
        got = chosen.setdefault(t, {}).setdefault(k, set())
        if bit not in got:
            got.add(bit)
            made += 1
    half = site_pitch_y_nm // 2
    for t, per_chunk in sorted(chosen.items()):
        old = tiles[t]
        refs = []
        for k, ref in enumerate(old.cell.references):
            if k not in per_chunk:
                refs.append(gdstk.Reference(ref.cell, ref.origin))
                continue
            n, old_value, tag = parse_chunk(ref.cell_name)
            value = old_value
            for bit in per_chunk[k]:
                value ^= 1 << bit
            name = chunk_name(n, value, tag)
            if name not in cells:
                moved = []
                flipped = value ^ old_value
                by_site = sorted(ref.cell.polygons, key=lambda p: p.points[:, 0].min())
                for i, poly in enumerate(by_site):
                    # bit 1 sits under the high strap (lower y): 0 -> 1 moves down.
                    dy = 0 if not flipped >> i & 1 else (-half if value >> i & 1 else half)
                    moved.append(gdstk.Polygon(poly.points + (0, dy), poly.layer, poly.datatype))
                cells[name] = lib.new_cell(name).add(*moved)
            refs.append(gdstk.Reference(cells[name], ref.origin))
        new = lib.new_cell(f"{prefix}T{rng.integers(1 << 62):016x}").add(*refs)
        top.remove(old)
        top.add(gdstk.Reference(new, old.origin))
    used = {c.name for c in [top] + top.dependencies(True)}
    lib.remove(*[c for c in lib.cells if c.name not in used])
    lib.write_gds(str(dst))
    return made


def klayout_xor(a: Path, b: Path, layers) -> tuple[dict, float]:
    """KLayout's flat XOR polygon count per layer, and the wall time (read + XOR)."""
    import klayout.db as kdb

    start = time.perf_counter()
    la, lb = kdb.Layout(), kdb.Layout()
    la.read(str(a))
    lb.read(str(b))
    counts = {}
    for layer in layers:
        ra = kdb.Region(la.top_cell().begin_shapes_rec(la.layer(*layer)))
        rb = kdb.Region(lb.top_cell().begin_shapes_rec(lb.layer(*layer)))
        counts[f"{layer[0]}/{layer[1]}"] = (ra ^ rb).merged().count()
    return counts, time.perf_counter() - start


def compare(a: Path, b: Path, pdk, vias: int, klayout_max_vias: int = 40_000_000) -> dict:
    """Time taalasc diff and KLayout XOR on the same two files; counts must agree."""
    from taalasc.diff import diff_masks

    start = time.perf_counter()
    d = diff_masks(a, b)
    ours_s = time.perf_counter() - start
    ours = {f"{t.layer[0]}/{t.layer[1]}": t.xor_polygons for t in d.layers}
    row = {"vias": vias, "file_bytes": Path(a).stat().st_size, "taalasc_s": round(ours_s, 3),
           "taalasc_counts": ours, "changed_shapes": d.changed_shapes, "masks": d.masks,
           "tiles_skipped_identical": d.dies[0].refs_skipped}
    if vias > klayout_max_vias:
        row["klayout"] = f"skipped: {vias:,} vias > {klayout_max_vias:,}"
        row["summary"] = f"{ours_s:.1f} s (KLayout XOR skipped above {klayout_max_vias:,} vias)"
        return row
    layers = [(pdk.layers.via.gds_layer, pdk.layers.via.gds_datatype),
              (pdk.layers.top_metal.gds_layer, pdk.layers.top_metal.gds_datatype)]
    theirs, klayout_s = klayout_xor(a, b, layers)
    row.update({"klayout_s": round(klayout_s, 3), "klayout_counts": theirs,
                "counts_identical": all(ours.get(k, 0) == v for k, v in theirs.items()),
                "speedup": round(klayout_s / ours_s, 1)})
    row["summary"] = (f"{ours_s:.1f} s vs KLayout XOR {klayout_s:.1f} s ({row['speedup']}×), "
                      f"counts {'equal' if row['counts_identical'] else 'DIFFER'}")
    return row


def measure(out_dir: Path, model: Path, work: Path, flips: int = 3000) -> dict:
    """bench/run.py hook: diff a compile folder's die 0 against a bit-flipped copy."""
    from taalasc.extract.extract import base_of, read_manifest

    manifest = read_manifest(out_dir)
    base = base_of(manifest, out_dir)
    a = Path(out_dir) / manifest["dies"][0]["files"]["gds"]
    b = Path(work) / "die0-flipped.gds"
    flip_bits(a, b, flips, base.weight_tile.site_pitch_y_nm)
    return compare(a, b, base.pdk, manifest["dies"][0]["via_count"])


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        f"# taalasc diff vs KLayout XOR ({result['started']})", "",
        f"Machine: {m['cpu']}, {m['nproc']} cores, {m['ram_bytes'] / 2**30:.1f} GiB RAM, "
        f"load average at start {', '.join(f'{x:.2f}' for x in m['load_average'])}; "
        f"Python {m['python']}, numpy {m['numpy']}, gdstk {m['gdstk']}, "
        f"klayout {m['klayout']}.", "",
        f"Mask set: one sky130 die, {result['tiles']} tiles of 2048 sites, "
        f"{result['vias']:,} vias, GDS {result['file_bytes'] / 2**20:,.1f} MiB, random bits "
        f"(written in {result['build_s']:.0f} s). B = A with N random bits flipped.", "",
        "| flipped bits | taalasc diff s | KLayout XOR s | speed-up | via XOR polygons "
        "(taalasc / KLayout) | top-metal XOR polygons | counts identical | identical tiles "
        "skipped |", "|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in result["runs"]:
        lines.append(
            f"| {r['flips']:,} | {r['taalasc_s']:.2f} | {r['klayout_s']:.2f} | "
            f"**{r['speedup']}×** | {r['taalasc_counts'].get('71/44', 0):,} / "
            f"{r['klayout_counts']['71/44']:,} | {r['taalasc_counts'].get('72/20', 0):,} / "
            f"{r['klayout_counts']['72/20']:,} | {r['counts_identical']} | "
            f"{r['tiles_skipped_identical']:,} |")
    lines += ["", "taalasc: `diff_masks(A, B)` (reads both files, diffs both layers, counts). "
              "KLayout: read both layouts, flat `Region` of each layer, "
              "`(A ^ B).merged().count()`.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiles", default="160x32", help="tile grid COLUMNSxROWS")
    parser.add_argument("--flips", default="3000,20",
                        help="comma-separated numbers of random bits to flip, one run each")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--keep", type=Path, default=None, help="keep the mask files here")
    args = parser.parse_args(argv)
    from taalasc.config import load_base_array

    columns, rows = (int(v) for v in args.tiles.lower().split("x"))
    result = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(),
              "tiles": f"{columns} x {rows}", "runs": []}
    work = Path(tempfile.mkdtemp(prefix="taalasc-bench-diff-"))
    try:
        base = load_base_array(bench_base_yaml(work, columns, rows))
        t0 = time.perf_counter()
        a, vias = write_die(base, work, "a")
        result.update(build_s=time.perf_counter() - t0, vias=vias, file_bytes=a.stat().st_size)
        print(f"built {vias:,} vias in {result['build_s']:.0f} s", file=sys.stderr)
        for k, flips in enumerate(int(v) for v in args.flips.split(",")):
            b = work / f"b{k}.gds"
            flip_bits(a, b, flips, base.weight_tile.site_pitch_y_nm, seed=1 + k)
            run = compare(a, b, base.pdk, vias, klayout_max_vias=10**12)
            result["runs"].append({"flips": flips, **run})
            print(f"{flips} flips: taalasc {run['taalasc_s']:.2f} s, KLayout "
                  f"{run['klayout_s']:.2f} s", file=sys.stderr)
            if args.keep:
                args.keep.mkdir(parents=True, exist_ok=True)
                shutil.copy(b, args.keep / b.name)
            b.unlink()
        if args.keep:
            shutil.copy(a, args.keep / a.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "diff.json").write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    (args.out / "diff.md").write_text(markdown(result))
    print(markdown(result))
    return 0 if all(r["counts_identical"] for r in result["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
