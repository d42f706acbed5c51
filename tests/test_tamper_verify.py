"""verify must fail on any folder that does not hold exactly the compiled model (issue 13).

Every case of tests/corpus/tamper.py edits a copy of one genuine two-die compile (top metal,
vias, cell hierarchy, the files, the manifest). verify must raise a TaalascError or return a
failed result for each; the CLI, on every tenth case, must exit non-zero with one `error:`
line and no traceback. The untampered copy must pass, so a failure here is the tamper's.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from corpus import tamper
from corpus.bad_inputs import assert_one_error
from taalasc.compile import _dumps
from taalasc.errors import TaalascError
from taalasc.outdir import MANIFEST
from taalasc.verify import verify

CASES = tamper.CASES
CLI_SAMPLE = CASES[::10]


@pytest.fixture(scope="module")
def genuine(tmp_path_factory) -> tamper.Genuine:
    return tamper.build_genuine(tmp_path_factory.mktemp("tamper"))


def _cli(folder, model, fmt: str) -> tuple[int, list[str]]:
    proc = subprocess.run([sys.executable, "-m", "taalasc", "verify", str(folder), str(model),
                           "--format", fmt], capture_output=True, text=True, timeout=300)
    return proc.returncode, [line for line in proc.stderr.splitlines() if line.strip()]


def test_the_corpus_is_large_and_covers_every_class():
    per_class = {k: sum(c.klass == k for c in CASES) for k in tamper.CLASSES}
    assert len(CASES) >= 150 and min(per_class.values()) >= 20, per_class


def test_the_untampered_copy_passes(genuine, tmp_path):
    folder = tamper.tampered(genuine, tamper.Case("control", "gds", lambda f, g: None), tmp_path)
    # The cases rewrite the manifest in the compile's own JSON style: unedited, same bytes.
    text = (folder / MANIFEST).read_text()
    assert _dumps(json.loads(text)) + "\n" == text
    for fmt in ("gds", "oas"):
        assert verify(folder, genuine.model, fmt=fmt).passed, fmt
    assert _cli(folder, genuine.model, "gds") == (0, [])


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_verify_refuses_a_tampered_folder(case, genuine, tmp_path):
    folder = tamper.tampered(genuine, case, tmp_path)
    assert tamper.snapshot(folder) != genuine.snapshot, "the case changed nothing"
    try:
        result = verify(folder, genuine.model, fmt=case.fmt)
    except TaalascError:
        return
    assert not result.passed, f"verify passed the tampered folder ({case.name})"


@pytest.mark.parametrize("case", CLI_SAMPLE, ids=[c.name for c in CLI_SAMPLE])
def test_the_cli_refuses_it_with_one_error_line(case, genuine, tmp_path):
    folder = tamper.tampered(genuine, case, tmp_path)
    code, lines = _cli(folder, genuine.model, case.fmt)
    assert code in (1, 2), (code, lines)
    assert_one_error(code, lines, ".", exit_code=code)
