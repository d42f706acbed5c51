"""Mixtures of experts in the shape model, published silicon beside the estimate (HC1, HNLPU,
the paper tier), and the generated calibration and encoding tables in the docs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from taalasc.cli import main
from taalasc.config import load_base_array
from taalasc.errors import ModelError
from taalasc.model.presets import PUBLISHED_ACTIVE_PARAMS, PUBLISHED_PARAMS, preset_config
from taalasc.report import Report, estimate, shape_from_config, shape_from_preset
from taalasc.report.calibration import DOCS, marked, tables
from taalasc.report.published import HC1, PAPERS, attach_published

TINY_MOE = {"model_type": "gpt_oss", "hidden_size": 32, "intermediate_size": 16,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 8, "vocab_size": 64, "num_local_experts": 8, "num_experts_per_tok": 2}


# --- mixtures of experts ------------------------------------------------------------------------

def test_gpt_oss_120b_preset_matches_the_model_card():
    model = shape_from_preset("gpt-oss-120b")
    assert model.params == PUBLISHED_PARAMS["gpt-oss-120b"]
    assert model.experts == (128, 4)
    # the card's 5.13 B active parameters leave out the embedding table (a lookup)
    embed = math.prod(model.tensors["model.embed_tokens.weight"])
    assert round((model.active_params - embed) / 1e7) / 100 == \
        PUBLISHED_ACTIVE_PARAMS["gpt-oss-120b"] / 1e9


@pytest.mark.parametrize("drop,missing", [("num_local_experts", "num_local_experts"),
                                          ("num_experts_per_tok", "num_experts_per_tok")])
def test_a_moe_config_missing_its_expert_counts_is_one_clear_error(drop, missing):
    config = {k: v for k, v in TINY_MOE.items() if k != drop}
    with pytest.raises(ModelError) as info:
        shape_from_config(config, "moe", "moe.json")
    assert str(info.value) == (f"moe.json: a mixture-of-experts config needs {missing} (the "
                               f"expert count: {missing} or "
                               f"{'num_experts' if drop == 'num_local_experts' else 'experts_per_token'}"
                               "); it is missing")


def test_the_gpt_oss_preset_without_its_counts_fails_on_the_command_line(tmp_path, capsys):
    config = preset_config("gpt-oss-120b")
    for key in ("num_local_experts", "num_experts_per_tok", "experts_per_token"):
        config.pop(key)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    assert main(["estimate", "--config", str(path), "--base", "hc1-n6-select"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {path}: a mixture-of-experts config needs num_local_experts (the "
                   "expert count: num_local_experts or num_experts); it is missing"]


def test_expert_counts_on_a_dense_family_or_more_active_than_experts_are_errors():
    with pytest.raises(ModelError, match=r"num_local_experts is set but model_type 'llama' is "
                                         r"a dense family"):
        shape_from_config({**TINY_MOE, "model_type": "llama"}, "m", "m.json")
    with pytest.raises(ModelError, match=r"num_experts_per_tok \(9\) is more than "
                                         r"num_local_experts \(8\)$"):
        shape_from_config({**TINY_MOE, "num_experts_per_tok": 9}, "m", "m.json")


def test_moe_area_counts_every_expert_cycles_and_energy_the_active_ones():
    base = load_base_array("sky130-demo")
    moe = shape_from_config(dict(TINY_MOE), "moe")
    r = estimate(moe, base, default_bits=4, group_size=None)
    experts = [n for n in moe.tensors if ".experts." in n and n.endswith(".weight")]
    assert len(experts) == 2 * 8 * 2
    # MACs: every product, an expert's at 2/8; the embedding table is a lookup
    products = [n for n, s in moe.tensors.items()
                if len(s) == 2 and n != "model.embed_tokens.weight"]
    macs = sum(math.prod(moe.tensors[n]) * (2 / 8 if n in experts else 1) for n in products)
    assert r.value("power__token__macs") == round(macs)
    assert r.value("design__weights__count") == moe.params
    assert r.value("design__tiles__active") < r.value("design__tiles__used")
    assert r.value("power__clock__watts") == pytest.approx(
        r.value("design__tiles__active") * (32 * 8 + 24) * base.pdk.cells.dff_switched_cap_ff
        * 1e-15 * base.pdk.electrical.supply_v ** 2 * 1e12 / r.value("timing__clock__period_ps"))
    # one expert's cycles: with one expert of the same shape only the router's rows differ
    # (8 rows instead of 1, one tile, one input block: 7 cycles more in each of 2 layers)
    one = shape_from_config({**TINY_MOE, "num_local_experts": 1, "num_experts_per_tok": 1}, "one")
    assert r.value("timing__pipeline__depth_cycles") - estimate(
        one, base, default_bits=4, group_size=None).value("timing__pipeline__depth_cycles") \
        == 2 * (8 - 1)
    assert any("mixture of experts: 8 experts, 2 per token" in n for n in r.notes)


# --- published silicon --------------------------------------------------------------------------

def test_hc1_rows_beside_the_select_base():
    report = attach_published(estimate(shape_from_preset("llama-3.1-8b"),
                                       load_base_array("hc1-n6-select"), auto=(3, 6, 3.5)),
                              "llama-3.1-8b")
    rows = {r["figure"]: r for r in report.published}
    assert [c.label for c in HC1.claims] == list(rows)
    for figure in ("tokens/s per user, claimed", "tokens/s per user, observed",
                   "transistors per die", "die area (mm²)"):
        assert rows[figure]["within_2x"] is True, rows[figure]
    # the die against a card: flagged, with what it is measured against
    assert rows["power"]["within_2x"] is False and "ours is the die" in rows["power"]["basis"]
    assert rows["aggregate tokens/s"]["published"] == "not published"
    assert rows["aggregate tokens/s"]["within_2x"] is None
    again = Report.from_json(report.to_json())
    assert again.published == json.loads(json.dumps(report.published))
    assert "## Published: Taalas HC1" in report.to_markdown()


def test_the_estimate_command_prints_the_published_figures(capsys):
    assert main(["estimate", "--preset", "llama-3.1-8b", "--base", "hc1-n6-select",
                 "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "## Published: Taalas HC1 (TSMC N6" in out
    assert "| tokens/s per user, observed (`throughput__single_stream__tokens_per_s`) |" in out
    assert main(["estimate", "--preset", "gpt-oss-120b", "--base", "hc1-n6-select",
                 "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    figures = {r["figure"]: r for r in data["published"]}
    assert figures["aggregate tokens/s"]["published"] == "249,960"
    assert figures["tokens/J"]["published"] == "36"
    assert data["meta"]["published"].startswith("HNLPU (5 nm, 16 chips")


def test_paper_densities_convert_the_published_units():
    tom, bitrom = PAPERS[1], PAPERS[2]
    assert tom.bits_per_um2 == pytest.approx(125.8, abs=0.05)     # 15.0 MB/mm², MB = 2**20 B
    assert bitrom.bits_per_um2 == pytest.approx(40.7, abs=0.05)   # 4,967 kB/mm², kB = 1024 B
    assert PAPERS[0].bits_per_um2 is None                          # ROMA: not at hand


# --- the generated documents --------------------------------------------------------------------

@pytest.fixture(scope="module")
def generated():
    return tables()


def test_the_docs_show_the_generated_tables(generated):
    for (doc, marker), table in generated.items():
        text = (DOCS / doc).read_text(encoding="utf-8")
        start, end = marked(text, marker)
        assert text[start:end] == table, (
            f"docs/{doc} {marker} is stale: regenerate with "
            "`python -m taalasc.report.calibration --write` and re-check the text around it")


def test_calibration_flags_what_lands_outside_2x(generated):
    hnlpu = generated[("calibration-hc1.md", "HNLPU-TABLE")]
    assert "| aggregate tokens/s (`throughput__aggregate__tokens_per_s`) |" in hnlpu
    assert "(outside 2×)" in hnlpu
    within = generated[("calibration-hc1.md", "HC1-WITHIN-TABLE")]
    line = next(l for l in within.splitlines() if l.startswith("| power "))
    assert line.count("(outside 2×)") == 1
    doc = (DOCS / "calibration-hc1.md").read_text(encoding="utf-8")
    assert "## HNLPU" in doc
