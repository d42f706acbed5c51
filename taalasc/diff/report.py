"""Format a MaskDiff: JSON, Markdown (a pull-request comment), a rich table, a PNG heat map
and a GDS/OASIS of the XOR region for KLayout. Data first (core.py), formatting here."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np

from taalasc.diff.core import MaskDiff
from taalasc.errors import OutputError

SCHEMA = "taalasc-diff/1"
MD_TENSORS = 30          # tensors listed in Markdown (all are in JSON)
MD_ELEMENTS = 8          # elements listed per tensor in Markdown
MD_TILES = 12            # tiles listed in Markdown


def _counts(by_layer: dict[str, int]) -> str:
    return ", ".join(f"{n:,} {layer}" for layer, n in sorted(by_layer.items())) or "–"


def to_json(diff: MaskDiff, threshold: dict | None = None) -> dict:
    """A JSON-ready dict of the whole diff (schema ``taalasc-diff/1``)."""
    from taalasc.diff.inputs import manifest_json

    return {
        "format": SCHEMA,
        "a": manifest_json(diff.a), "b": manifest_json(diff.b),
        "identical": diff.identical,
        "changed_shapes": diff.changed_shapes,
        "xor_polygons": diff.xor_polygons,
        "shapes_a": diff.shapes_a,
        "masks": diff.masks,
        "masks_per_die": [sorted(m) for m in diff.masks_per_die],
        "respin": diff.respin,
        "layers": [t.to_json() for t in diff.layers],
        "dies": [{"die": d.die, "refs_skipped_identical": d.refs_skipped,
                  "refs_compared": d.refs_compared, "same_file_bytes": d.same_bytes,
                  "layers": {f"{k[0]}/{k[1]}": {"added": v.n_added, "removed": v.n_removed,
                                                "xor_polygons": v.xor_count}
                             for k, v in sorted(d.layers.items())}} for d in diff.dies],
        "tiles": [t.to_json() for t in diff.tiles],
        "tensors": [t.to_json() for t in diff.tensors],
        "threshold": threshold,
        "notes": diff.notes,
    }


def write_json(diff: MaskDiff, path: Path, threshold: dict | None = None) -> None:
    _write_text(path, json.dumps(to_json(diff, threshold), indent=1, sort_keys=True) + "\n")


def _write_text(path: Path, text: str) -> None:
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from None


def element_text(kind: str, row: int, col: int) -> str:
    """``codes[40, 100]``; fp16 vectors are 1-D: ``vector[7]``."""
    return f"{kind}[{col}]" if kind == "vector" else f"{kind}[{row}, {col}]"


def _verdict(diff: MaskDiff) -> str:
    if diff.identical:
        return "identical: no mask changes"
    cost = f", re-spin ≈ ${diff.respin['usd']:,.0f}" if diff.respin else ""
    return f"{diff.changed_shapes:,} shapes changed — {diff.masks}{cost}"


def _md_name(name: str) -> str:
    """A tensor name from a checkpoint as inline markdown code: escaped, table-safe."""
    from taalasc.errors import safe_text

    return "`" + safe_text(name).replace("`", "'").replace("|", "\\|") + "`"


def to_markdown(diff: MaskDiff, threshold: dict | None = None) -> str:
    """A pull-request comment: verdict, per layer, per tensor, re-spin cost."""
    lines = [f"### taalasc mask diff: {_verdict(diff)}", "",
             f"`{diff.a.path}` → `{diff.b.path}`", ""]
    if threshold:
        mark = "❌ above" if threshold["exceeded"] else "✅ within"
        lines += [f"{mark} threshold: {threshold['detail']}", ""]
    lines += ["| layer | added | removed | XOR polygons |", "|---|---:|---:|---:|"]
    for t in diff.layers:
        lines.append(f"| {t.name} ({t.layer[0]}/{t.layer[1]}) | {t.added:,} | {t.removed:,} | "
                     f"{t.xor_polygons:,} |")
    lines.append("")
    if diff.respin:
        inp = diff.respin["inputs"]
        lines += [f"**Masks to re-make:** {diff.masks} — **${diff.respin['usd']:,.0f}** "
                  f"({inp['dies_with_via_changes']} × via mask "
                  f"${inp['via_mask_cost_usd']['value']:,.0f} + "
                  f"{inp['dies_with_top_metal_changes']} × top-metal mask "
                  f"${inp['top_metal_mask_cost_usd']['value']:,.0f})", ""]
    tiles = [t for t in diff.tiles if t.column is not None]
    if diff.tiles:
        lines += [f"Changed: {len(tiles)} weight tile(s), {len(diff.tiles) - len(tiles)} other "
                  "instance(s).", "", "| die | where | added | removed | tensor |",
                  "|---:|---|---|---|---|"]
        for t in diff.tiles[:MD_TILES]:
            names = sorted({n for n in (t.tensor_a, t.tensor_b) if n})
            lines.append(f"| {t.die} | {t.label} | {_counts(t.added)} | {_counts(t.removed)} | "
                         f"{', '.join(_md_name(n) for n in names)} |")
        if len(diff.tiles) > MD_TILES:
            lines.append(f"| | … {len(diff.tiles) - MD_TILES} more (see the JSON) | | | |")
        lines.append("")
    if diff.tensors:
        lines += ["| tensor | values changed | bits | where |", "|---|---:|---:|---|"]
        for t in diff.tensors[:MD_TENSORS]:
            if t.placement_changed:
                where = f"re-placed ({t.vias_added:,} vias added, {t.vias_removed:,} removed)"
                lines.append(f"| {_md_name(t.tensor)} | – | – | {where} |")
                continue
            shown = ", ".join(element_text(k, r, c) for k, r, c, _ in t.elements[:MD_ELEMENTS])
            more = t.values_changed - min(len(t.elements), MD_ELEMENTS)
            shown += f" … (+{more:,})" if more > 0 else ""
            kinds = ", ".join(f"{n:,} {k}" for k, n in sorted(t.changed.items()))
            lines.append(f"| {_md_name(t.tensor)} | {kinds} | {t.bits_changed:,} | {shown} |")
        if len(diff.tensors) > MD_TENSORS:
            more = len(diff.tensors) - MD_TENSORS
            lines.append(f"| … {more} more tensors (see the JSON) | | | |")
        lines.append("")
    for note in diff.notes:
        lines += [f"_{note}_", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_markdown(diff: MaskDiff, path: Path, threshold: dict | None = None) -> None:
    _write_text(path, to_markdown(diff, threshold))


HTML_ROWS = 500          # changed tiles and tensors listed in the HTML page (all are in JSON)


def to_html(diff: MaskDiff, threshold: dict | None = None) -> str:
    """One self-contained page for a review: the verdict, the heat map, shapes per layer, the
    re-spin cost with its formula and sources, the changed tiles and tensors."""
    from taalasc.png import png_bytes
    from taalasc.report import html as h
    from taalasc.report.metrics import format_value

    meta = [("A", diff.a.path), ("B", diff.b.path), ("masks to re-make", diff.masks)]
    if diff.respin:
        meta.append(("re-spin cost", f"${diff.respin['usd']:,.0f}"))
    if threshold:
        meta.append(("--max-changed " + str(threshold["max_changed"]),
                     ("above: " if threshold["exceeded"] else "within: ") + threshold["detail"]))
    exceeded = bool(threshold and threshold["exceeded"])
    verdict = (f"<p class=\"verdict {'fail' if exceeded else 'pass'}\">"
               f"{h.esc(_verdict(diff))}</p>\n")
    parts = [verdict, h.notes_section(diff.notes),
             h.section("Where the masks changed", h.picture(png_bytes(heatmap_rgb(diff)),
                                                            "heat map of the changed shapes")),
             h.section("Shapes per layer", h.table(
                 ["layer", "added", "removed", "XOR polygons"],
                 ([f"{t.name} {t.layer[0]}/{t.layer[1]}", f"{t.added:,}", f"{t.removed:,}",
                   f"{t.xor_polygons:,}"] for t in diff.layers), numeric=[1, 2, 3]))]
    if diff.respin:
        inputs = [[k, format_value(v["value"]) if isinstance(v, dict) else format_value(v),
                   v["source"] if isinstance(v, dict) else "counted in this diff"]
                  for k, v in sorted(diff.respin["inputs"].items())]
        parts.append(h.section("Re-spin cost", f"<p><b>${diff.respin['usd']:,.0f}</b> = "
                               f"{h.esc(diff.respin['formula'])}</p>\n"
                               + h.table(["input", "value", "source"], inputs, numeric=[1])))
    if diff.tiles:
        rows = [[t.die, t.label, _counts(t.added), _counts(t.removed),
                 h.Raw(", ".join(f"<code>{h.esc(n)}</code>"
                                 for n in sorted({n for n in (t.tensor_a, t.tensor_b) if n})))]
                for t in diff.tiles[:HTML_ROWS]]
        parts.append(h.section(f"Changed tiles ({len(diff.tiles):,})", h.table(
            ["die", "where", "added", "removed", "tensor"], rows, numeric=[0],
            caption=_more(len(diff.tiles)))))
    if diff.tensors:
        rows = []
        for t in diff.tensors[:HTML_ROWS]:
            name = h.Raw(f"<code>{h.esc(t.tensor)}</code>")
            if t.placement_changed:
                rows.append([name, "re-placed", "", f"{t.vias_added:,} vias added, "
                             f"{t.vias_removed:,} removed"])
                continue
            shown = ", ".join(element_text(k, r, c) for k, r, c, _ in t.elements[:MD_ELEMENTS])
            more = t.values_changed - min(len(t.elements), MD_ELEMENTS)
            rows.append([name, ", ".join(f"{n:,} {k}" for k, n in sorted(t.changed.items())),
                         f"{t.bits_changed:,}", shown + (f" … (+{more:,})" if more > 0 else "")])
        parts.append(h.section(f"Changed tensors ({len(diff.tensors):,})", h.table(
            ["tensor", "values changed", "bits", "where"], rows, numeric=[2],
            caption=_more(len(diff.tensors)))))
    return h.page(f"taalasc diff — {diff.a.path.name} → {diff.b.path.name}", meta, parts)


def _more(count: int) -> str:
    return f"the first {HTML_ROWS} of {count:,}; --json lists all" if count > HTML_ROWS else ""


def write_html(diff: MaskDiff, path: Path, threshold: dict | None = None) -> None:
    _write_text(path, to_html(diff, threshold))


def print_summary(diff: MaskDiff, threshold: dict | None = None, console=None) -> None:
    """The terminal summary (rich), folded to the terminal's width (taalasc.console)."""
    from taalasc.console import console as terminal, print_tables, print_text
    from taalasc.errors import safe_markup

    out = console or terminal()
    style = "green" if diff.identical else "yellow"
    out.print(f"[bold {style}]{safe_markup(_verdict(diff))}[/]  ({diff.seconds:.2f} s)")
    print_tables(out, "Shapes per layer", ["layer", "added", "removed", "XOR polygons"],
                 [[f"{t.name} {t.layer[0]}/{t.layer[1]}", f"{t.added:,}", f"{t.removed:,}",
                   f"{t.xor_polygons:,}"] for t in diff.layers], right=[1, 2, 3])
    if diff.tensors:
        rows = []
        for t in diff.tensors[:MD_TENSORS]:
            if t.placement_changed:
                rows.append([t.tensor, "re-placed", "",
                             f"{t.vias_added + t.vias_removed:,} vias"])
                continue
            first = ", ".join(element_text(k, r, c) for k, r, c, _ in t.elements[:4])
            rows.append([t.tensor, f"{t.values_changed:,}", f"{t.bits_changed:,}", first])
        more = len(diff.tensors) - MD_TENSORS
        print_tables(out, "Per tensor", ["tensor", "values", "bits", "first elements"], rows,
                     right=[1, 2], wrap=[3], caption=f"… {more:,} more tensors (--json "
                     "lists all)" if more > 0 else None)
    if diff.respin:
        print_text(out, f"re-spin: {diff.masks}, ${diff.respin['usd']:,.0f} "
                        f"({diff.respin['formula']})")
    if threshold:
        colour = "red" if threshold["exceeded"] else "green"
        word = "above" if threshold["exceeded"] else "within"
        out.print(f"[{colour}]{word} --max-changed: {safe_markup(threshold['detail'])}[/]")
    for note in diff.notes:
        out.print(f"[dim]{safe_markup(note)}[/]")


# -- pictures and geometry -------------------------------------------------------------------
HEATMAP_SIDE_PX = 512
XOR_TIMESTAMP = datetime(2000, 1, 1)   # fixed, like the mask writer: same diff, same bytes
UNIT_M = 1e-9
_GAP_PX = 8


DIE_GREY, TILE_GREY = (70, 70, 70), (110, 110, 110)


def _heat_colours(level: np.ndarray) -> np.ndarray:
    """Yellow (level 0: one changed shape) to red (level 1: the most in any pixel)."""
    return np.stack([np.full_like(level, 255), 230 * (1 - level), 40 * (1 - level)],
                    -1).astype(np.uint8)


def heat_scale(w_nm: int, h_nm: int, side_px: int = HEATMAP_SIDE_PX) -> tuple[float, int, int]:
    """(pixels per nm, die height and width in pixels) of a heat map of dies ``w_nm`` by
    ``h_nm`` whose longer side is ``side_px``."""
    scale = side_px / max(w_nm, h_nm)
    return scale, max(1, int(round(h_nm * scale))), max(1, int(round(w_nm * scale)))


def heat_counts(d, origin_nm: tuple[int, int], scale: float, shape: tuple[int, int]
                ) -> np.ndarray:
    """Changed shapes of die change ``d`` per pixel (by their centres), [height, width]."""
    dh, dw = shape
    counts = np.zeros((dh, dw), np.int64)
    for lc in d.layers.values():
        for rects in (lc.added, lc.removed):
            if len(rects):
                cx = ((rects[:, 0] + rects[:, 2]) / 2 - origin_nm[0]) * scale
                cy = ((rects[:, 1] + rects[:, 3]) / 2 - origin_nm[1]) * scale
                ix = np.clip(cx.astype(np.int64), 0, dw - 1)
                iy = np.clip(dh - 1 - cy.astype(np.int64), 0, dh - 1)
                counts += np.bincount(iy * dw + ix, minlength=dh * dw).reshape(dh, dw)
    return counts


def _heat_dies(diff: MaskDiff, side_px: int) -> tuple[np.ndarray, int, float, int, int]:
    """The dies side by side, longer side ``side_px``: (RGB image, most changed shapes in a
    pixel, nm per pixel, die width in pixels, reach in pixels of one change)."""
    base = diff.a.base or diff.b.base
    extents = []
    for d in diff.dies:
        if base is not None:
            extents.append((0, 0, base.die.width_nm, base.die.height_nm))
        else:
            x0, y0, x1, y1 = d.extent_nm
            extents.append((min(x0, 0), min(y0, 0), max(x1, 1), max(y1, 1)))
    w_nm = max(e[2] - e[0] for e in extents)
    h_nm = max(e[3] - e[1] for e in extents)
    scale, dh, dw = heat_scale(w_nm, h_nm, side_px)
    n = len(diff.dies)
    img = np.full((dh, n * dw + (n - 1) * _GAP_PX, 3), 255, np.uint8)
    reach = max(1, side_px // 160)
    counted = []
    for k, (d, (x0, y0, _, _)) in enumerate(zip(diff.dies, extents)):
        left = k * (dw + _GAP_PX)
        die = img[:, left:left + dw]
        die[:] = DIE_GREY
        if base is not None:
            g, t = base.tile_grid, base.weight_tile
            for c in range(g.columns):
                for r in range(g.rows):
                    ox, oy = g.tile_origin_nm(c, r)
                    px0 = int(ox * scale)
                    px1 = max(px0 + 1, int((ox + t.width_nm) * scale))
                    py1 = dh - int(oy * scale)
                    py0 = min(py1 - 1, dh - int((oy + t.height_nm) * scale))
                    die[max(py0, 0):py1, px0:px1] = TILE_GREY
        if d.heat is not None and d.heat[0] == side_px:
            counts = d.heat[1]
        elif d.shapes_dropped:
            raise ValueError(f"die {d.die}: the diff kept no shapes (keep_shapes=False); its "
                             f"heat map was made at {HEATMAP_SIDE_PX} px only")
        else:
            counts = heat_counts(d, (x0, y0), scale, (dh, dw))
        # Grow each changed pixel to a small square so that one flipped bit stays visible.
        padded = np.pad(counts, reach)
        grown = counts.copy()
        for dy in range(2 * reach + 1):
            for dx in range(2 * reach + 1):
                grown = np.maximum(grown, padded[dy:dy + dh, dx:dx + dw])
        counted.append((die, grown))
    top = max((int(c.max()) for _, c in counted), default=0)
    for die, counts in counted:  # one scale for all dies: the same colour, the same count
        hot = counts > 0
        if hot.any():
            die[hot] = _heat_colours(np.log(counts[hot]) / np.log(max(top, 2)))
    return img, top, 1 / scale, dw, reach


def heatmap_rgb(diff: MaskDiff, side_px: int = HEATMAP_SIDE_PX) -> np.ndarray:
    """Where the masks differ: each die (its longer side ``side_px``) with the changed shapes
    per pixel, log-scaled from yellow to red over a grey die (weight tiles lighter when the
    base array is known); a title, die numbers, a colour scale with its unit and a legend."""
    from taalasc import draw

    dies, top, nm_per_px, die_w, reach = _heat_dies(diff, side_px)
    margin = 12
    title = f"taalasc diff: {diff.a.path.name} → {diff.b.path.name}"
    px_um = nm_per_px / 1000
    about = (f"{diff.changed_shapes:,} changed shapes ({diff.masks}) on {len(diff.dies)} "
             f"{'die' if len(diff.dies) == 1 else 'dies'}; a pixel is {px_um:.3g} × "
             f"{px_um:.3g} µm; a change is drawn {2 * reach + 1} pixels wide so that one "
             "flipped bit shows.")
    inner = max(dies.shape[1], 420)
    about_lines = draw.wrap(about, inner)
    legend = [(DIE_GREY, "die, unchanged")]
    if diff.a.base or diff.b.base:
        legend.append((TILE_GREY, "weight tile, unchanged"))
    bar_h = 12
    height = (margin + (2 + len(about_lines)) * draw.LINE_H + 6 + dies.shape[0] + 10
              + 3 * draw.LINE_H + bar_h + 12 + draw.legend_height(legend, inner) + margin)
    img = np.full((height, inner + 2 * margin, 3), 255, np.uint8)
    y = margin
    draw.draw_text(img, margin, y, draw.fit_text(title, inner), bold=True)
    y += draw.LINE_H + 2
    for line in about_lines:
        draw.draw_text(img, margin, y, line, draw.MUTED)
        y += draw.LINE_H
    y += 4
    for k, d in enumerate(diff.dies):
        draw.draw_text(img, margin + k * (die_w + _GAP_PX), y,
                       draw.fit_text(f"die {d.die}", die_w) or str(d.die), bold=True)
    y += draw.LINE_H
    img[y:y + dies.shape[0], margin:margin + dies.shape[1]] = dies
    y += dies.shape[0] + 10
    bar_w = min(inner, 360)
    unit = f"changed shapes per {px_um:.3g} × {px_um:.3g} µm pixel (log scale)"
    if top:
        ticks = [v for v in (1, 10, 100, 1000, 10000, 100000) if v < top] + [top]
        marks = [(float(np.log(v) / np.log(max(top, 2))), f"{v:,}") for v in ticks]
        y = draw.colour_bar(img, margin, y, bar_w, bar_h,
                            _heat_colours(np.linspace(0.0, 1.0, 64)), marks,
                            draw.fit_text(unit, inner)) + 2
    else:
        draw.draw_text(img, margin, y, "no changed shape", draw.MUTED)
        y += draw.LINE_H + bar_h + 12 + draw.LINE_H
    draw.draw_legend(img, margin, y, legend, inner)
    return img


def write_heatmap(diff: MaskDiff, path: Path, side_px: int = HEATMAP_SIDE_PX) -> tuple[int, int]:
    """Write the heat map PNG; returns (width, height) in pixels."""
    from taalasc.png import write_png

    img = heatmap_rgb(diff, side_px)
    write_png(path, img)
    return img.shape[1], img.shape[0]


def write_xor(diff: MaskDiff, path: Path) -> None:
    """The XOR region of every layer, one top cell ``XOR_DIE{n}`` per die, for KLayout.

    Layers keep their numbers; the region equals KLayout's ``Region(A) ^ Region(B)``.
    """
    import gdstk

    path = Path(path)
    if path.suffix.lower() not in (".gds", ".oas"):
        raise OutputError(f"{path}: the XOR file must end in .gds or .oas")
    if any(d.shapes_dropped for d in diff.dies):
        raise ValueError("the diff kept no shapes (keep_shapes=False): no XOR file")
    lib = gdstk.Library("XOR", unit=UNIT_M, precision=UNIT_M)
    for d in diff.dies:
        cell = lib.new_cell(f"XOR_DIE{d.die}")
        for (layer, dtype), lc in sorted(d.layers.items()):
            for x0, y0, x1, y1 in lc.xor_rects.tolist():
                cell.add(gdstk.rectangle((x0, y0), (x1, y1), layer=layer, datatype=dtype))
    try:
        if path.suffix.lower() == ".oas":
            lib.write_oas(str(path))
        else:
            lib.write_gds(str(path), timestamp=XOR_TIMESTAMP)
    except Exception as exc:  # gdstk raises plain OSError/RuntimeError
        raise OutputError(f"{path}: cannot write ({exc})") from None
