"""taalasc.formats.safe_read: structure checks, the child-process read, the expansion cap."""

from __future__ import annotations

import gdstk
import numpy as np
import pytest

from corpus.masks import GDSTK_CRASHERS, aref_bomb, seed_library, write_seed
from gdstk_ref import gdstk_rects
from taalasc.formats import safe_read
from taalasc.errors import MaskError


@pytest.mark.parametrize("validation", [None, "crc32", "checksum32"])
def test_oasis_validation_schemes_are_read_and_checked(tmp_path, validation):
    good = tmp_path / "v.oas"
    seed_library().write_oas(good, validation=validation)
    assert len(gdstk_rects(good)[(71, 44)]) == 7
    data = bytearray(good.read_bytes())
    data[40] ^= 0xFF  # inside the cell data: only a signature can tell
    bad = tmp_path / "bad.oas"
    bad.write_bytes(bytes(data))
    if validation is None:
        safe_read.check_oas(bad)  # nothing to check against; gdstk decides
    else:
        with pytest.raises(MaskError, match=r"does not match: the file is damaged"):
            safe_read.check_oas(bad)


def test_every_cut_of_an_oasis_file_is_refused_before_gdstk(tmp_path):
    _, oas = write_seed(tmp_path)
    data = oas.read_bytes()
    cut = tmp_path / "cut.oas"
    for n in range(0, len(data), 7):
        cut.write_bytes(data[:n])
        with pytest.raises(MaskError, match=r"cannot read mask file"):
            safe_read.check_oas(cut)


def test_gds_zero_padding_after_endlib_is_fine_but_a_cut_is_not(tmp_path):
    gds, _ = write_seed(tmp_path)
    padded = tmp_path / "padded.gds"
    padded.write_bytes(gds.read_bytes() + b"\0" * 1000)
    assert len(gdstk_rects(padded)[(71, 44)]) == 7
    cut = tmp_path / "cut.gds"
    cut.write_bytes(gds.read_bytes()[:-1])
    with pytest.raises(MaskError, match=r"no ENDLIB record at the end"):
        gdstk_rects(cut)


def test_a_crash_in_gdstk_is_one_line_with_the_signal_and_nothing_on_stderr(capfd):
    path = next(p for p in GDSTK_CRASHERS if p.name == "gdstk_abort.gds")
    capfd.readouterr()
    with pytest.raises(MaskError) as info:
        gdstk_rects(path)
    assert capfd.readouterr().err == ""
    message = str(info.value)
    assert message.startswith(f"{path}: cannot read mask file (gdstk crashed with SIG")
    assert "\n" not in message


@pytest.mark.parametrize("ext", ["gds", "oas"])
def test_reference_cycle_is_refused(tmp_path, ext):
    lib = gdstk.Library(unit=1e-9, precision=1e-9)
    a, b, top = lib.new_cell("A"), lib.new_cell("B"), lib.new_cell("TOP")
    a.add(gdstk.rectangle((0, 0), (800, 800), layer=71, datatype=44))
    top.add(gdstk.Reference(a))
    a.add(gdstk.Reference(b))
    b.add(gdstk.Reference(a))
    path = tmp_path / f"cycle.{ext}"
    lib.write_gds(path) if ext == "gds" else lib.write_oas(path)
    with pytest.raises(MaskError, match=r"is part of a reference cycle"):
        gdstk_rects(path)
    with pytest.raises(MaskError, match=r"is part of a reference cycle"):
        safe_read.load_library(path)


def test_oasis_repetition_bomb_is_refused(tmp_path):
    lib = gdstk.Library(unit=1e-9, precision=1e-9)
    rect = gdstk.rectangle((0, 0), (800, 800), layer=71, datatype=44)
    rect.repetition = gdstk.Repetition(columns=20000, rows=20000, spacing=(1600, 1600))
    lib.new_cell("TOP").add(rect)
    path = tmp_path / "rep.oas"
    lib.write_oas(path)
    with pytest.raises(MaskError, match=r"at most \d+ shapes are read"):
        gdstk_rects(path)


def test_load_library_keeps_the_hierarchy_and_refuses_a_bomb(tmp_path):
    gds, oas = write_seed(tmp_path)
    for path in (gds, oas):
        lib = safe_read.load_library(path)
        assert sorted(c.name for c in lib.cells) == ["TOP", "VIA"]
    with pytest.raises(MaskError, match=r"would expand to 1000000000000 shapes"):
        safe_read.load_library(aref_bomb(tmp_path))


def test_rect_arrays_come_back_exactly(tmp_path):
    gds, oas = write_seed(tmp_path)
    a, b = gdstk_rects(gds), gdstk_rects(oas)
    assert sorted(a) == sorted(b) == [(71, 44), (72, 20)]
    for layer in a:
        assert a[layer].dtype == np.int64 and a[layer].shape[1] == 4
        np.testing.assert_array_equal(np.sort(a[layer], axis=0), np.sort(b[layer], axis=0))
