"""docs/calibration-hc1.md shows the table the current code and YAML produce."""

from pathlib import Path

import pytest

from taalasc.config import builtin_names
from taalasc.report.calibration import calibration_reports, calibration_table

DOC = Path(__file__).resolve().parents[1] / "docs" / "calibration-hc1.md"


@pytest.mark.skipif("hc1-n6" not in builtin_names("base"), reason="hc1-n6 base array missing")
def test_calibration_table_is_current():
    text = DOC.read_text(encoding="utf-8")
    begin, end = "<!-- CALIBRATION-TABLE:BEGIN -->\n", "<!-- CALIBRATION-TABLE:END -->"
    shown = text[text.index(begin) + len(begin):text.index(end)]
    reports = calibration_reports()
    assert shown == calibration_table(reports), (
        "docs/calibration-hc1.md is stale: regenerate the table with "
        "`python -m taalasc.report.calibration` and re-check the explanations")
    # the headline facts the document argues from
    auto = reports["3/6 auto, 3.5 b/w"]
    assert auto.value("design__die__count") == 1
    assert auto.value("design__weights__count") == 8_030_261_248
