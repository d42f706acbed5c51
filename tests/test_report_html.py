"""The HTML pages (issue 18): report.html beside every compile, `report --html`,
`estimate --html` (one point and a sweep). Parsed with html.parser always; rendered in headless
Chromium where one is installed. The diff page is tested in test_diff_flow.py."""

from __future__ import annotations

import pytest

from htmlpage import browser, browser_check, parse_page
from taalasc.cli import main
from taalasc.compile import CompileOptions, compile_model
from taalasc.model.synth import write_demo
from taalasc.place.plan import Placement, Segment, TileSlot
from taalasc.place.store import read_placement
from taalasc.report.html import compile_page, estimate_page
from taalasc.report.metrics import Metric, Report, format_value

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>&amp;'
LONG = "model." + "verylongtensornamewithoutanyspace" * 8 + ".weight"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    root = tmp_path_factory.mktemp("html")
    model = write_demo(root / "model")
    out = root / "out"
    compile_model(model, out, CompileOptions(formats=("oas",)))
    return model, out


def _words(text: str) -> str:
    return " ".join(str(text).split())


def test_compile_page_holds_pictures_every_metric_and_every_tensor(compiled):
    _, out = compiled
    page = parse_page((out / "report.html").read_text(encoding="utf-8"))
    report = Report.read(out / "report.json")
    for m in report.metrics:
        assert _words(m.name) in page.text and _words(format_value(m.value)) in page.text, m.name
        assert _words(m.formula) in page.text, m.name
    for note in report.notes:
        assert _words(note) in page.text
    placement = read_placement(out, __import__("json").loads(
        (out / "manifest.json").read_text()))
    for name, _ in placement.layers:
        assert name in page.text
    # the pictures are the compile's own files, embedded
    sizes = []
    for name in ("overview.png", "die0.png"):
        data = (out / name).read_bytes()
        sizes.append(tuple(int.from_bytes(data[k:k + 4], "big") for k in (16, 20)))
    assert page.images == sizes


def test_report_html_makes_the_compile_page_again(compiled, tmp_path, capsys):
    _, out = compiled
    assert main(["report", str(out), "--html", str(tmp_path / "page.html")]) == 0
    assert (tmp_path / "page.html").read_bytes() == (out / "report.html").read_bytes()
    assert f"wrote {tmp_path / 'page.html'}" in capsys.readouterr().err
    # never written into the compile folder it reads
    assert main(["report", str(out), "--html", str(out / "other.html")]) == 1
    assert not (out / "other.html").exists()


def test_report_html_of_a_lone_report_json(compiled, tmp_path):
    _, out = compiled
    lone = tmp_path / "r.json"
    lone.write_bytes((out / "report.json").read_bytes())
    assert main(["report", str(lone), "--html", str(tmp_path / "page.html")]) == 0
    page = parse_page((tmp_path / "page.html").read_text(encoding="utf-8"))
    assert page.images == [] and "design__die__area" in page.text


def test_report_html_of_a_folder_with_a_broken_manifest(compiled, tmp_path, capfd):
    import json
    import shutil

    from corpus.bad_inputs import assert_one_error, run_cli

    folder = tmp_path / "copy"
    shutil.copytree(compiled[1], folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["placement"] = {"assignments": "none"}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    code, lines = run_cli(capfd, ["report", folder, "--html", tmp_path / "page.html"])
    assert_one_error(code, lines, r"copy/manifest.json: placement.tiles_used must be a count")
    assert not (tmp_path / "page.html").exists()


def test_estimate_and_sweep_pages(tmp_path):
    one, sweep = tmp_path / "one.html", tmp_path / "sweep.html"
    assert main(["estimate", "--preset", "llama-3.2-1b", "--json", "--html", str(one)]) == 0
    page = parse_page(one.read_text(encoding="utf-8"))
    assert "timing__clock__fmax_mhz" in page.text and page.images == []
    assert main(["estimate", "--preset", "llama-3.2-1b", "--sweep-bits", "3,4", "--json",
                 "--html", str(sweep)]) == 0
    page = parse_page(sweep.read_text(encoding="utf-8"))
    assert len(page.images) == 1 and "sky130-demo 3 bits" in page.text


def _hostile_page() -> str:
    metric = Metric(name=f"design__{HOSTILE}", value=1.5, unit="<b>mm²</b>",
                    formula=f"a < b && {HOSTILE}", inputs={HOSTILE: (2, f"model: {HOSTILE}")},
                    description=HOSTILE)
    report = Report([metric], meta={"model": HOSTILE}, notes=[HOSTILE])
    placement = Placement.of("sky130-demo", 1, layers=((HOSTILE, 0), (LONG, None)),
                             assignments=((TileSlot(0, 0, 0), Segment(HOSTILE, "codes", 4, (0, 8),
                                                                      (0, 8))),
                                          (TileSlot(0, 1, 0), Segment(LONG, "codes", 4, (0, 8),
                                                                      (0, 8)))))
    return compile_page(report, placement, {HOSTILE: {"bits": 4, "sqnr_db": 20.0}},
                        [{"die": 0, "present": True, "bit_vias": 64}], [])


def test_names_from_the_inputs_are_escaped():
    """A checkpoint can name a tensor <script>: the page shows the name, runs nothing."""
    for text in (_hostile_page(), estimate_page(Report(
            [Metric(HOSTILE, 1, HOSTILE, HOSTILE)], {"model": HOSTILE}, [HOSTILE]))):
        page = parse_page(text)        # refuses a script tag, an event handler, an open tag
        assert HOSTILE in page.text and "onerror" not in text.replace(
            "onerror=alert(1)&gt;", "")


def test_compile_page_is_deterministic(compiled, tmp_path):
    model, out = compiled
    again = tmp_path / "again"
    compile_model(model, again, CompileOptions(formats=("oas",)))
    assert (again / "report.html").read_bytes() == (out / "report.html").read_bytes()


@pytest.mark.skipif(browser() is None, reason="no Chromium installed (Debian: apt-get install "
                    "chromium-headless-shell); the html.parser tests above still run")
def test_pages_render_in_a_real_browser(compiled, tmp_path):
    """It renders, the pictures load, nothing is wider than a 1280-pixel window (a
    300-character tensor name without a space included)."""
    _, out = compiled
    estimate = tmp_path / "estimate.html"
    assert main(["estimate", "--preset", "llama-3.2-1b", "--sweep-bits", "3,4", "--json",
                 "--html", str(estimate)]) == 0
    hostile = tmp_path / "hostile.html"
    hostile.write_text(_hostile_page(), encoding="utf-8")
    for page, images in ((out / "report.html", 2), (estimate, 1), (hostile, 0)):
        found = browser_check(page, tmp_path)
        assert found["images"] == found["decoded"] == images, (page.name, found)
        assert found["scrollWidth"] <= found["innerWidth"] and not found["wide"], \
            (page.name, found)
        assert found["screenshot_bytes"] > 0, page.name
