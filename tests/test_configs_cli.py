"""`taalasc configs list|show|check` through click's CliRunner."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from taalasc.commands.configs import check_paths, configs, detect_kind
from taalasc.config import builtin_names
from taalasc.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def run():
    runner = CliRunner()
    return lambda *args: runner.invoke(configs, list(args))


def test_list_names_every_builtin_with_a_summary(run):
    result = run("list")
    assert result.exit_code == 0, result.output
    for name in builtin_names("pdk") + builtin_names("base"):
        assert re.search(rf"^  {re.escape(name)} ", result.output, re.M), name
    assert re.search(r"^  sky130-demo +pdk sky130 +14\.40 mm² +256 tiles ", result.output, re.M)
    assert re.search(r"^  n6-class +6 nm +estimate only ", result.output, re.M)


def test_show_pdk_prints_values_with_their_sources(run):
    result = run("show", "sky130")
    assert result.exit_code == 0, result.output
    assert re.search(r"^  rules\.via_size_nm +800 +google/skywater-pdk docs/rules/periphery/"
                     r"p044-via4_dotdash\.csv \(via4\.1", result.output, re.M)
    assert re.search(r"^  layers\.via +via4 71/44 +google/skywater-pdk", result.output, re.M)
    assert re.search(r"^  cost\.wafer_cost_usd +2500 +estimate: ", result.output, re.M)


def test_show_base_array_prints_its_values_and_derived_capacity(run):
    result = run("show", "--kind", "base", "sky130-demo")
    assert result.exit_code == 0, result.output
    assert re.search(r"^  tile_grid\.columns +16 +sky130-demo\.yaml$", result.output, re.M)
    assert re.search(r"^  derived\.tile_capacity_bits +2048 +derived: ", result.output, re.M)


def test_show_json_is_machine_readable(run):
    result = run("show", "ihp-sg13g2", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    values = {v["key"]: v for v in data["values"]}
    assert data["kind"] == "pdk"
    assert values["rules.via_space_nm"]["value"] == 1060
    assert "TopVia2 SPACING 1.06" in values["rules.via_space_nm"]["source"]


def test_show_a_yaml_path_detects_its_kind(run):
    result = run("show", str(ROOT / "base_array" / "hc1-n6.yaml"))
    assert result.exit_code == 0, result.output
    assert result.output.startswith("base array hc1-n6 (")


def test_show_unknown_name_suggests_a_builtin(run):
    result = run("show", "sky13")
    assert result.exit_code == 1
    assert isinstance(result.exception, ConfigError)
    assert re.match(r"^sky13: no built-in PDK or base array and no file named 'sky13' "
                    r"\(did you mean 'sky130'\?\); built-in: ", str(result.exception))


def test_check_valid_files_exits_0(run):
    paths = sorted(str(p) for p in (ROOT / "pdk_configs").glob("*.yaml"))
    paths += sorted(str(p) for p in (ROOT / "base_array").glob("*.yaml"))
    result = run("check", *paths)
    assert result.exit_code == 0, result.output
    assert result.output.count("ok  ") == len(paths)
    assert f"ok  {ROOT / 'base_array' / 'hc1-n6.yaml'} (base)" in result.output


def test_check_reports_every_problem_of_every_file_and_exits_1(run, tmp_path):
    good = ROOT / "pdk_configs" / "sky130.yaml"
    bad_pdk = tmp_path / "bad_pdk.yaml"
    bad_pdk.write_text(good.read_text(encoding="utf-8")
                       .replace("via_size_nm: {value: 800,", "via_size_nm: {value: -800,")
                       .replace("  supply_v: {value: 1.8, source: \"", "  supply_v: {value: 1.8, sourse: \""),
                       encoding="utf-8")
    bad_base = tmp_path / "bad_base.yaml"
    bad_base.write_text((ROOT / "base_array" / "sky130-demo.yaml").read_text(encoding="utf-8")
                        .replace("site_pitch_x_nm: 1600", "site_pitch_x_nm: 1200"), encoding="utf-8")
    result = run("check", str(good), str(bad_pdk), str(bad_base))
    assert result.exit_code == 1
    assert result.stdout == f"ok  {good} (pdk)\n"
    err = result.stderr.splitlines()
    assert str(result.exception) == "configs check: 2 of 3 file(s) have problems (listed above)"
    assert len(err) == 4  # one line per problem: 3 in bad_pdk, 1 in bad_base
    pinned = [rf"^{re.escape(str(bad_pdk))}: rules\.via_size_nm\.value: must be > 0, not -800$",
              rf"^{re.escape(str(bad_pdk))}: electrical\.supply_v\.sourse: unknown key "
              r"\(did you mean 'source'\?\)",
              rf"^{re.escape(str(bad_pdk))}: electrical\.supply_v\.source: is required$",
              rf"^{re.escape(str(bad_base))}: weight_tile\.site_pitch_x_nm: 1200 nm is below the "
              r"via pitch 1600 nm"]
    for pattern in pinned:
        assert any(re.search(pattern, line) for line in err), (pattern, err)


def test_check_reports_unreadable_yaml(run, tmp_path):
    path = tmp_path / "alias.yaml"
    path.write_text("a: &x 1\nb: *x\n", encoding="utf-8")
    result = run("check", str(path))
    assert result.exit_code == 1
    assert re.search(rf"^{re.escape(str(path))}: line 2: YAML aliases \(\*name\) are not allowed",
                     result.stderr, re.M)


def test_check_a_missing_file(run, tmp_path):
    result = run("check", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 1
    assert re.search(r"nope\.yaml: cannot read: No such file", result.stderr)


def test_detect_kind_and_check_paths_library_api(tmp_path):
    assert detect_kind(ROOT / "base_array" / "sky130-demo.yaml") == "base"
    assert detect_kind(ROOT / "pdk_configs" / "gf180mcu.yaml") == "pdk"
    forced = check_paths([ROOT / "pdk_configs" / "sky130.yaml"], kind="base")
    assert forced[0][1] == "base" and any("max_dies: is required" in p for p in forced[0][2])


def test_through_the_cli_entry_point(monkeypatch, capsys, tmp_path):
    from taalasc import cli

    monkeypatch.setitem(cli.COMMANDS, "configs", ("taalasc.commands.configs", "configs",
                                                  "List, show and check PDK and base-array YAML."))
    assert cli.main(["configs", "check", str(ROOT / "base_array" / "sky130-demo.yaml")]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n", encoding="utf-8")
    assert cli.main(["configs", "check", str(bad)]) == 1
    assert cli.main(["configs", "show", "no-such-pdk"]) == 1
    err = capsys.readouterr().err
    assert re.search(r"bad\.yaml: title: is required", err)
    assert re.search(r"^error: configs check: 1 of 1 file\(s\) have problems", err, re.M)
    assert re.search(r"^error: no-such-pdk: no built-in PDK or base array", err, re.M)
