"""The compile summary's arithmetic and the order dies are listed in (die2 before die10)."""

import json

import pytest

from taalasc.compile import _summary
from taalasc.errors import OutputError
from taalasc.outdir import MANIFEST, _check_replaceable
from taalasc.rebuilt import compare_folder

DIES = 12  # die10 and die11 sort before die2 as plain strings


def manifest(dies=DIES, tiles=12_345):
    """A manifest with only what the summary reads: die i has (i + 1) * 1000 bits and its
    GDSII file 4 bytes per bit, its OASIS file (i + 1) * 100 bytes."""
    entries = [{"die": i, "present": True, "bit_vias": (i + 1) * 1000, "tie_vias": 10,
                "route_vias": 2, "stored_bits": (i + 1) * 1000,
                "files": {"gds": f"die{i}.gds", "oas": f"die{i}.oas"}}
               for i in range(dies)]
    outputs = {}
    for i in range(dies):
        outputs[f"die{i}.gds"] = {"bytes": 4 * (i + 1) * 1000, "sha256": "0" * 64}
        outputs[f"die{i}.oas"] = {"bytes": (i + 1) * 100, "sha256": "0" * 64}
    return {"dies": entries, "outputs": dict(sorted(outputs.items())),
            "inputs": {"model": {}, "base_array": {"name": "test-base"}},
            "placement": {"tiles_used": tiles}}


def test_bytes_per_bit_is_over_the_die_bits_and_dies_are_in_die_order():
    rows = dict(_summary(manifest()))
    files = [name for name, _ in _summary(manifest()) if name.endswith((".gds", ".oas"))]
    assert files == [f"die{i}.{fmt}" for i in range(DIES) for fmt in ("gds", "oas")]
    for i in range(DIES):  # 4 bytes per bit of its own die, not of all 78,000 bits
        assert rows[f"die{i}.gds"] == f"{4 * (i + 1) * 1000:,} bytes (4.000 B/bit)"
        assert rows[f"die{i}.oas"] == f"{(i + 1) * 100:,} bytes (0.100 B/bit)"
    assert rows["programmed bits (vias)"] == "78,000"


def test_large_counts_have_thousands_separators():
    rows = dict(_summary(manifest(tiles=1_234_567)))
    assert rows["tiles used"] == "1,234,567"
    assert rows["dies"] == "12"


def test_a_partial_compile_lists_its_dies_and_counts_the_absent_ones():
    m = manifest()
    m["dies"][3] = {"die": 3, "present": False, "files": {}, "bit_vias": 0, "tie_vias": 0,
                    "stored_bits": 4000,
                    "route_vias": 0}
    rows = _summary(m)
    assert dict(rows)["dies"] == "11 of 12 (--die)"
    assert not any(name.startswith("die3.") for name, _ in rows)


def test_verify_lists_differing_files_in_die_order(tmp_path):
    m = manifest()
    for name in m["outputs"]:  # every die file present, one byte too short
        (tmp_path / name).write_bytes(b"\0" * (m["outputs"][name]["bytes"] - 1))
    (tmp_path / MANIFEST).write_text("{}")
    (tmp_path / "rebuilt").mkdir()
    (tmp_path / "rebuilt" / MANIFEST).write_text("{}")
    found = compare_folder(tmp_path, tmp_path / "rebuilt", m)
    named = [p.split(":")[0] for p in found.problems]
    assert named[:4] == ["rebuilt", "die0.gds", "die0.oas", "die1.gds"]  # the extra folder first
    assert named.index("die2.gds") < named.index("die10.gds") < named.index("die11.gds")
    assert found.differing_masks == [f"die{i}.{f}" for i in range(DIES) for f in ("gds", "oas")]


def test_a_folder_holding_foreign_files_names_them_in_die_order(tmp_path):
    (tmp_path / MANIFEST).write_text(json.dumps({"inputs_digest": "x", "outputs": {}}))
    for i in (10, 2, 1):
        (tmp_path / f"die{i}.gds").write_bytes(b"")
    with pytest.raises(OutputError, match=r"also holds die1\.gds, die2\.gds, die10\.gds,"):
        _check_replaceable(tmp_path, "x", force=False)
