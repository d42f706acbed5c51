"""Report formats (JSON, Markdown, rich), `taalasc report`, and the estimate command."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import save_file

from taalasc.commands.estimate import estimate_cmd
from taalasc.commands.report import report_cmd
from taalasc.config import load_base_array
from taalasc.errors import ModelError, OutputError
from taalasc.report import (REPORT_FILE, Report, estimate, lora_from_adapter, lora_from_rank,
                            shape_from_preset)


@pytest.fixture(scope="module")
def report():
    model = shape_from_preset("llama-3.2-1b")
    return estimate(model, load_base_array("sky130-demo"), auto=(3, 6, 3.5),
                    lora=lora_from_rank(model, 8))


def test_every_metric_has_unit_formula_and_sourced_inputs(report):
    sections = {m.name.split("__")[0] for m in report.metrics}
    assert sections == {"design", "timing", "throughput", "power", "sram", "cost"}
    for m in report.metrics:
        assert m.name.count("__") == 2, m.name
        assert m.formula, m.name
        for key, (_, source) in m.inputs.items():
            assert source, f"{m.name}.{key} has no source"
    fa = report["timing__tile__critical_path_ps"].inputs["full_adder_delay_ps"][1]
    assert fa.startswith("pdk sky130: cells.full_adder_delay_ps — ") and "fa_1" in fa


def test_json_round_trip_and_contents(report):
    text = report.to_json()
    data = json.loads(text)
    assert data["format"] == "taalasc-report" and data["version"] == 1
    assert [m["name"] for m in data["metrics"]] == report.names()
    assert all(m["formula"] for m in data["metrics"])
    again = Report.from_json(text)
    assert again.to_json() == text  # deterministic bytes


def test_markdown_lists_every_metric_with_its_formula(report):
    md = report.to_markdown()
    for m in report.metrics:
        assert f"`{m.name}`" in md
        assert m.formula.replace("|", "\\|") in md
    assert "## Notes" in md and "heuristic" in md


def test_rich_table_has_a_row_per_metric(report):
    assert report.rich_table().row_count == len(report.metrics)


def test_report_command_prints_the_compile_report(tmp_path, report):
    report.write(tmp_path / REPORT_FILE)
    runner = CliRunner()
    res = runner.invoke(report_cmd, [str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output) == json.loads(report.to_json())
    res = runner.invoke(report_cmd, [str(tmp_path), "--markdown"])
    assert "`cost__die__usd`" in res.output
    res = runner.invoke(report_cmd, [str(tmp_path)])
    assert "design__die__area" in res.output


def test_report_file_errors(tmp_path):
    with pytest.raises(OutputError, match=r"no report here"):
        Report.read(tmp_path / REPORT_FILE)
    (tmp_path / REPORT_FILE).write_text('{"format": "other"}')
    with pytest.raises(OutputError, match=r"format must be 'taalasc-report', not 'other'"):
        Report.read(tmp_path / REPORT_FILE)


def test_duplicate_metric_names_are_refused(report):
    with pytest.raises(ValueError, match="unique"):
        Report([report.metrics[0], report.metrics[0]])


def test_estimate_command_json():
    res = CliRunner().invoke(estimate_cmd, ["--preset", "llama-3.1-8b", "--json", "--users", "4",
                                            "--rule", "*.v_proj.*=6"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    values = {m["name"]: m["value"] for m in data["metrics"]}
    assert values["design__weights__count"] == 8_030_261_248
    assert data["meta"]["users"] == 4 and "*.v_proj.*=6" in data["meta"]["bits"]


def test_estimate_command_needs_exactly_one_model():
    res = CliRunner().invoke(estimate_cmd, [])
    assert isinstance(res.exception, ModelError)
    assert "exactly one of MODEL, --config or --preset" in str(res.exception)
    res = CliRunner().invoke(estimate_cmd, ["--preset", "nope"])
    assert isinstance(res.exception, ModelError)


def test_estimate_from_config_json(tmp_path):
    from taalasc.model.presets import preset_config

    (tmp_path / "config.json").write_text(json.dumps(preset_config("mistral-7b")))
    res = CliRunner().invoke(estimate_cmd, ["--config", str(tmp_path / "config.json"),
                                            "--markdown"])
    assert res.exit_code == 0, res.output
    assert "| `design__weights__count` | 7,241,732,096 |" in res.output


def test_sweep_table_and_plot(tmp_path):
    png = tmp_path / "sweep.png"
    res = CliRunner().invoke(estimate_cmd, ["--preset", "llama-3.2-1b", "--sweep-bits", "3,4,6",
                                            "--markdown", "--plot", str(png)])
    assert res.exit_code == 0, res.output
    rows = [line for line in res.output.splitlines() if line.startswith("| sky130-demo")]
    assert len(rows) == 3
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fewer_bits_giving_fewer_tokens_is_explained_beside_the_sweep(tmp_path):
    """On hc1-n6 a 3-bit tile holds 4/3 the rows of a 4-bit one: fewer tokens/s. The table
    and the plot say why; where fewer bits are faster nothing is added."""
    from taalasc.report.sweep import render_sweep, sweep, sweep_notes

    model = shape_from_preset("llama-3.2-1b")
    bases = [load_base_array("hc1-n6"), load_base_array("sky130-reticle")]
    points = sweep(model, bases, [3, 4])
    tokens = {label: r.value("throughput__aggregate__tokens_per_s") for label, r in points}
    assert tokens["hc1-n6 3 bits"] < tokens["hc1-n6 4 bits"]
    assert tokens["sky130-reticle 3 bits"] > tokens["sky130-reticle 4 bits"]
    notes = sweep_notes(points)
    assert len(notes) == 1 and notes[0].startswith("hc1-n6: fewer bits give fewer tokens/s")
    assert "capacity / (lanes × bits)" in notes[0] and "cycles per token" in notes[0]
    res = CliRunner().invoke(estimate_cmd, ["--preset", "llama-3.2-1b", "--sweep-base",
                                            "hc1-n6", "--sweep-bits", "3,4"])
    assert res.exit_code == 0 and "note: hc1-n6: fewer bits give fewer tokens/s" in res.output
    img = render_sweep(points)  # the note is drawn under the charts: the picture grows
    assert img.shape[0] > render_sweep(points[2:]).shape[0]
    np.testing.assert_array_equal(img, render_sweep(points))


def test_sweep_plot_has_axes_units_and_a_legend():
    from taalasc.draw import INK, RULE
    from taalasc.report.sweep import PANELS, render_sweep, sweep

    points = sweep(shape_from_preset("llama-3.2-1b"),
                   [load_base_array("sky130-demo"), load_base_array("hc1-n6")], [4, 8])
    img = render_sweep(points)
    ink = (img == np.array(INK, np.uint8)).all(axis=2)
    assert ink.any(axis=0).sum() > img.shape[1] // 2          # axes, titles, tick labels
    assert (img == np.array(RULE, np.uint8)).all(axis=2).sum() > 1000  # grid lines
    assert len(PANELS) == 4 and all(points[0][1][m].unit for m, _ in PANELS)


def test_route_delay_says_it_is_not_in_the_clock_period(report):
    formula = report["timing__route__elmore_ps"].formula
    assert "not in the clock period" in formula and "timing__route__hops" in formula


def test_lora_adapter_folder(tmp_path):
    save_file({"base_model.model.layers.0.q_proj.lora_A.weight": np.zeros((8, 64), np.float16),
               "base_model.model.layers.0.q_proj.lora_B.weight": np.zeros((64, 8), np.float16)},
              str(tmp_path / "adapter_model.safetensors"))
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 8,
                                                              "target_modules": ["q_proj"]}))
    lora = lora_from_adapter(tmp_path)
    assert lora.params == 2 * 8 * 64
    r = estimate(shape_from_preset("llama-3.2-1b"), load_base_array("sky130-demo"), lora=lora)
    assert r.value("sram__lora__adapter_bytes") == 2 * 8 * 64 * 2
    assert r.value("sram__lora__fits") is True


def test_lora_rank_counts_q_and_v():
    model = shape_from_preset("llama-3.1-8b")
    # per layer: q (4096 + 4096) + v (4096 + 1024), rank 16, 32 layers
    assert lora_from_rank(model, 16).params == 16 * (8192 + 5120) * 32
    with pytest.raises(ModelError, match="positive"):
        lora_from_rank(model, 0)


def test_report_for_compile_accepts_quant_specs(tmp_path):
    from taalasc.quant.quantize import QuantSpec
    from taalasc.report import PlacementFacts, report_for_compile

    shapes = {"model.layers.0.self_attn.k_proj.weight": (16, 64),
              "model.layers.0.mlp.down_proj.weight": (64, 128), "model.norm.weight": (64,)}
    bits = {"model.layers.0.self_attn.k_proj.weight": QuantSpec(4, 32),
            "model.layers.0.mlp.down_proj.weight": QuantSpec(6, None)}
    facts = PlacementFacts(tiles_used=7, dies=1, longest_route_nm=500_000, via_count=12345,
                           top_metal_shape_count=999)
    r = report_for_compile(load_base_array("sky130-demo"), shapes, bits, facts,
                           config={"num_hidden_layers": 1})
    assert r.value("design__tiles__used") == 7 and r.value("design__via__count") == 12345
    assert r.value("design__weights__bits") == 16 * 64 * 4 + 64 * 128 * 6
    assert r["design__tiles__used"].formula == "from placement"
    r.write(tmp_path / REPORT_FILE)
    assert Report.read(tmp_path / REPORT_FILE).to_json() == r.to_json()
