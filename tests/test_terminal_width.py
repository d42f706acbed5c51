"""Terminal output that fits (issue 18): at COLUMNS=80, piped, `report`, `estimate` (one
point and a sweep), `faults` and `simulate` print no line wider than 80 columns and lose no
text (names and figures may be folded, never cut). Piped without $COLUMNS: 100 columns. The
diff's tables and percentages are tested in test_diff_flow.py."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from taalasc.cli import main
from taalasc.compile import CompileOptions, compile_model
from taalasc.console import print_tables
from taalasc.model.synth import write_demo
from taalasc.report.metrics import Report, format_value
from termtext import shown, squeeze, widest


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo model, with a small word-level tokenizer beside it, and its compile."""
    from tokenizers import Tokenizer, models

    root = tmp_path_factory.mktemp("width")
    model = write_demo(root / "model")
    vocab = {f"tok{i}": i for i in range(256)} | {" the": 38}
    Tokenizer(models.WordLevel({k: v for k, v in vocab.items() if k != "tok38"},
                               unk_token="tok0")).save(str(model / "tokenizer.json"))
    compile_model(model, root / "out", CompileOptions(formats=("oas",)))
    return model, root / "out"


def _run(capsys, monkeypatch, argv, columns: str | None = "80") -> str:
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 0
    return capsys.readouterr().out


def test_report_fits_80_columns_and_keeps_every_figure(demo, capsys, monkeypatch):
    _, out = demo
    text = _run(capsys, monkeypatch, ["report", out])
    assert widest(text) <= 80
    seen = shown(text)
    report = Report.read(out / "report.json")
    for m in report.metrics:
        for part in (m.name, format_value(m.value), m.unit, m.formula):
            assert squeeze(part) in seen, (m.name, part)
    for note in report.notes:
        assert squeeze(f"note: {note}") in seen


def test_piped_without_columns_is_100_wide(demo, capsys, monkeypatch):
    text = _run(capsys, monkeypatch, ["report", demo[1]], columns=None)
    assert widest(text) == 100


def test_estimate_and_its_sweep_fit_80_columns(capsys, monkeypatch):
    text = _run(capsys, monkeypatch, ["estimate", "--preset", "llama-3.1-8b"])
    assert widest(text) <= 80 and squeeze("timing__clock__fmax_mhz") in shown(text)
    args = ["estimate", "--preset", "llama-3.1-8b", "--sweep-bits", "3,4,6",
            "--sweep-base", "sky130-demo,hc1-n6"]
    text = _run(capsys, monkeypatch, args)
    assert widest(text) <= 80
    seen = shown(text)
    points = json.loads(_run(capsys, monkeypatch, args + ["--json"]))
    assert len(points) == 6
    for point in points:
        assert squeeze(f"{point['meta']['base_array']} {point['meta']['bits'].split(',')[0]}") \
            in seen
        for m in point["metrics"]:
            if m["name"] in ("power__total__watts", "cost__tokens__usd_per_million"):
                assert squeeze(format_value(m["value"])) in seen, m["name"]
    assert "fewerbitsgivefewertokens/shere" in seen     # the note beside the sweep, whole


def test_faults_fits_80_columns_with_its_headers_and_tensor_names(demo, capsys, monkeypatch,
                                                                  tmp_path):
    model, out = demo
    data = tmp_path / "f.json"
    text = _run(capsys, monkeypatch, ["faults", out, model, "--rate", "1e-3", "--trials", "1",
                                      "--fragile", "5", "--min-faults", "2", "--format", "oas",
                                      "--json", data])
    assert widest(text) <= 80
    seen = shown(text)
    for head in ("rate/site", "kl_vs_float (nats) mean (worst)", "top1_vs_chip mean (worst)",
                 "lost pos."):
        assert squeeze(head) in seen, head
    streams = json.loads(data.read_text())["fragility"]["streams"][:5]
    assert len(streams) == 5
    for row in streams:
        assert squeeze(row["tensor"]) in seen


def test_simulate_labels_its_top_tokens(demo, capsys, monkeypatch):
    model, _ = demo
    text = _run(capsys, monkeypatch, ["simulate", model, "--tokens", "1 2 3", "--top", "5"])
    assert widest(text) <= 80
    seen = shown(text)
    assert squeeze("next token: the 5 likeliest") in seen
    assert squeeze('text: "tok1 tok2 tok3"') in seen
    rows = [line for line in text.splitlines() if line.startswith("│") and '"tok' in line]
    assert len(rows) == 5 and all(line.count('"') >= 4 for line in rows)  # id "text", twice
    for figure in ("kl_mean_nats", "nats", "of positions", "24 bits"):
        assert squeeze(figure) in seen, figure


def test_a_long_name_folds_and_a_wide_table_splits():
    out = Console(file=io.StringIO(), width=80)
    name = "model." + "x" * 150 + ".weight"
    header = ["tensor"] + [f"figure {k}" for k in range(12)]
    rows = [[name] + [f"{k * 1234.5:,.1f}" for k in range(12)], ["short"] + ["1"] * 12]
    print_tables(out, "t", header, rows, right=range(1, 13))
    text = out.file.getvalue()
    assert widest(text) <= 80 and squeeze(name) in shown(text)
    assert text.count("t (1/") == 1                     # printed in parts, all numbered
    for cell in rows[0][1:]:
        assert cell in text
