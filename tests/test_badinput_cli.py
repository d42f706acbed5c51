"""The command line's side of the bad-input contract (docs/bad-input.md, "Command line"):
usage errors, the last-resort error handler, names that would drive the terminal, a manifest
that points at a file that is not a config, broken pipes and Python warnings."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest

from corpus.bad_inputs import assert_one_error, run_cli, small_llama
from taalasc import cli
from taalasc.errors import ConfigError, ModelError, safe_text
from taalasc.model.synth import llama_config, llama_shapes, write_safetensors

REPO = Path(__file__).resolve().parent.parent
# Names a hostile checkpoint can give its tensors: a colour escape, rich markup, a one-byte
# CSI (C1), a bidi override, a window-title sequence, a non-ASCII letter.
EVIL_VECTOR = "evil\x1b[31mRED[bold]B[/bold]\u202eXYZ\x9b2J\u00e9"
EVIL_MATRIX = "x\x1b]0;pwned\x07.weight"
RAW = ("\x1b", "\x9b", "\u202e", "\x07")  # none of these may reach the terminal


def _env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


def _taalasc(*argv, stdout=subprocess.PIPE, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "taalasc", *map(str, argv)], stdout=stdout,
                          stderr=subprocess.PIPE, text=True, env=_env(**env), timeout=120)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return small_llama(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def evil(tmp_path_factory) -> Path:
    """A valid tiny Llama plus a vector and a matrix with hostile names."""
    folder = tmp_path_factory.mktemp("evil")
    config = llama_config(hidden=32, layers=1, heads=2, kv_heads=1, intermediate=64, vocab=64)
    (folder / "config.json").write_text(json.dumps(config))
    rng = np.random.default_rng(0)
    tensors = {n: rng.standard_normal(s).astype(np.float32) * 0.02
               for n, s in llama_shapes(config).items()}
    tensors[EVIL_VECTOR] = np.ones(4, np.float32)
    tensors[EVIL_MATRIX] = np.ones((4, 32), np.float32)
    write_safetensors(folder / "model.safetensors", tensors, "F32")
    return folder


@pytest.fixture(scope="module")
def evil_out(evil, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("evil-out") / "out"
    assert cli.main(["compile", str(evil), "-o", str(out), "--quiet"]) == 0
    return out


# --------------------------------------------------------------------------- usage errors

USAGE_CASES = [
    (["--foo"], r"taalasc: No such option '--foo'"),
    ([], r"taalasc: Missing command\."),
    (["no-such-command"], r"taalasc: No such command 'no-such-command'"),
    (["compile"], r"taalasc compile: Missing argument 'MODEL'"),
    (["compile", "m", "--foo"], r"taalasc compile: No such option '--foo'"),
    (["compile", "m", "--method", "nope"], r"taalasc compile: Invalid value for '--method': "
                                           r"'nope' is not one of 'rtn', 'gptq'"),
    (["faults", "a", "b", "--seed", "x"], r"taalasc faults: Invalid value for '--seed': 'x' "
                                          r"is not a valid integer"),
    (["estimate", "--budget", "abc"], r"taalasc estimate: Invalid value for '--budget'"),
    (["report", "a", "b"], r"taalasc report: Got unexpected extra argument \(b\)"),
    (["configs"], r"taalasc configs: Missing command\."),
    (["configs", "show"], r"taalasc configs show: Missing argument 'NAME'"),
]


@pytest.mark.parametrize("argv, pattern", USAGE_CASES, ids=[" ".join(c[0]) or "none"
                                                            for c in USAGE_CASES])
def test_usage_error_is_one_line_and_exit_1(capfd, argv, pattern):
    code, lines = run_cli(capfd, argv)
    assert_one_error(code, lines, pattern)
    assert not re.search(r"^(Usage|Try|Error):", capfd.readouterr().out, re.M)


def test_help_and_version_still_work(capsys):
    assert cli.main(["--help"]) == 0
    assert "Usage: taalasc [OPTIONS] COMMAND" in capsys.readouterr().out
    assert cli.main(["compile", "--help"]) == 0
    assert "Usage: taalasc compile [OPTIONS] MODEL" in capsys.readouterr().out
    assert cli.main(["--version"]) == 0
    assert "taalasc, version" in capsys.readouterr().out


# --------------------------------------------------------------------------- the last resort

@click.command("boom")
@click.argument("kind")
def boom(kind: str) -> None:
    """Raise what KIND names: every path of cli.main's error handling."""
    def recurse(n: int) -> int:
        return recurse(n + 1) + 1

    if kind == "recursion":
        recurse(0)
    raise {
        "internal": RuntimeError("bad \x1b[2J\u202e " + "x" * 5000),
        "memory": MemoryError(),
        "eof": EOFError(),
        "interrupt": KeyboardInterrupt(),
        "pipe": BrokenPipeError(32, "Broken pipe"),  # not stdout's: a real error
        "oserror": PermissionError(13, "Permission denied", "/tmp/\x1b[31mx"),
        "encode": UnicodeEncodeError("ascii", "caf\u00e9", 3, 4, "ordinal not in range"),
        "model": ModelError("tensor 'a\x1b[31m\nb' is bad"),
        "config": ConfigError("f.yaml", [f"k{i}: bad" for i in range(60)]),
    }[kind]


LAST_RESORT = [
    ("internal", 1, r"internal error \(RuntimeError: bad \\x1b\[2J\\u202e x+\.\.\. \(4,710 "
                    r"more characters\)\); please report it"),
    ("recursion", 1, r"input nested too deeply \(RecursionError\); please report it$"),
    ("memory", 1, r"out of memory$"),
    ("eof", 1, r"unexpected end of input$"),
    ("interrupt", 130, r"interrupted$"),
    ("pipe", 1, r"broken pipe \("),
    ("oserror", 1, r"Permission denied \(/tmp/\\x1b\[31mx\)$"),
    ("encode", 1, r"cannot encode '\\xe9' in ascii; set PYTHONIOENCODING=utf-8$"),
    ("model", 1, r"tensor 'a\\x1b\[31m\\nb' is bad$"),
]


@pytest.mark.parametrize("kind, code, pattern", LAST_RESORT, ids=[c[0] for c in LAST_RESORT])
def test_every_failure_is_one_escaped_line(capfd, monkeypatch, kind, code, pattern):
    monkeypatch.setitem(cli.COMMANDS, "boom", (__name__, "boom", "test"))
    monkeypatch.delenv("TAALASC_DEBUG", raising=False)
    exit_code, lines = run_cli(capfd, ["boom", kind])
    assert (exit_code, len(lines)) == (code, 1) and lines[0].startswith("error: "), lines
    assert re.search(pattern, lines[0]) and not any(c in lines[0] for c in RAW), lines


def test_debug_adds_the_traceback(capfd, monkeypatch):
    monkeypatch.setitem(cli.COMMANDS, "boom", (__name__, "boom", "test"))
    monkeypatch.setenv("TAALASC_DEBUG", "1")
    code, lines = run_cli(capfd, ["boom", "internal"])
    assert code == 1 and lines[0].startswith("Traceback (most recent call last):")
    assert lines[-1].startswith("error: internal error (RuntimeError: ")


def test_config_error_lists_at_most_50_problems(capfd, monkeypatch):
    monkeypatch.setitem(cli.COMMANDS, "boom", (__name__, "boom", "test"))
    code, lines = run_cli(capfd, ["boom", "config"])
    assert code == 1 and lines[0] == "error: f.yaml: 60 problems"
    assert lines[1:] == [f"  f.yaml: k{i}: bad" for i in range(50)] + ["  f.yaml: ... and 10 more"]


# --------------------------------------------------------------------------- names from files

def test_safe_text():
    assert safe_text("a\x1b[31m\tb\n\x7f\x9b\u202e\u2066\udcff\\ é[x]") == \
        "a\\x1b[31m\\tb\\n\\x7f\\x9b\\u202e\\u2066\\xff\\ é[x]"
    assert safe_text("abcdef", max_chars=4) == "abcd... (2 more characters)"


@pytest.mark.parametrize("command", ["inspect", "quantize"])
def test_tensor_names_are_escaped_in_tables(capsys, evil, command):
    assert cli.main([command, str(evil)]) == 0
    out = capsys.readouterr().out
    assert not any(c in out for c in RAW), repr(out)
    assert "x\\x1b]0;pwned\\x07.weight" in out
    if command == "inspect":  # quantize lists the matrices only
        assert "evil\\x1b[31mRED[bold]B[/bold]\\u202eXYZ\\x9b2J" in out  # markup literal


def test_tensor_names_are_escaped_in_faults(capsys, evil, evil_out):
    assert cli.main(["faults", str(evil_out), str(evil), "--rate", "0.001", "--trials", "1",
                     "--fragile", "50", "--tokens", "1 2 3"]) == 0
    out = capsys.readouterr().out
    assert not any(c in out for c in RAW), repr(out)
    assert "x\\x1b]0;pwned\\x07.weight" in out


def test_report_json_names_are_escaped(capsys, evil_out, tmp_path):
    """report.json is a file like any other: metric names, formulas and notes are escaped,
    in the rich table and in --markdown."""
    out = tmp_path / "copy"
    out.mkdir()
    doc = json.loads((evil_out / "report.json").read_text())
    doc["metrics"][0]["name"] = "m\x1b[2J[red]x"
    doc["metrics"][0]["formula"] = "f\u202e"
    doc.setdefault("notes", []).append("n\x9b")
    (out / "report.json").write_text(json.dumps(doc))
    for extra in ([], ["--markdown"]):
        assert cli.main(["report", str(out), *extra]) == 0
        text = capsys.readouterr().out
        assert not any(c in text for c in RAW), repr(text)
        assert "m\\x1b[2J[red]x" in text and "f\\u202e" in text and "n\\x9b" in text


def test_error_line_escapes_names(capfd, tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    write_safetensors(folder / "model.safetensors",
                      {"w\x1b[31m[bold]\u202e": np.ones((2, 2, 2), np.float32)}, "F32")
    code, lines = run_cli(capfd, ["compile", folder, "-o", tmp_path / "out", "--quiet"])
    assert_one_error(code, lines, r"w\\x1b\[31m\[bold\]\\u202e")


def test_ascii_terminal_gets_escapes_not_a_crash(evil):
    done = _taalasc("inspect", evil, PYTHONIOENCODING="ascii")
    assert done.returncode == 0 and done.stderr == ""
    assert "\\xe9" in done.stdout


def test_manifest_base_pointing_at_another_file_quotes_none_of_it(capfd, evil, evil_out,
                                                                  tmp_path):
    """A manifest from someone else names a file as its base array: the error says what is
    wrong without printing the file (a secret, a binary, thousands of keys)."""
    secret = tmp_path / "secret"
    secret.write_text("root:x:0:0:TOPSECRET:/root:/bin/bash\n" * 50)
    binary = tmp_path / "blob"
    binary.write_bytes(bytes(range(256)) * 8)
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({f"k{i}\x1b": i for i in range(500)}))
    out = tmp_path / "out"
    manifest = json.loads((evil_out / "manifest.json").read_text())
    # verify hashes the file a manifest names before it parses it: none of them is read as
    # YAML (the loader's own refusals of such files are tested in test_badinput_configs).
    refused = r"compiled for base array 'sky130-demo' with another YAML .* differs or is not a regular file$"
    for target, pattern in ((secret, refused), (binary, refused), (keys, refused)):
        manifest["inputs"]["base_array"]["path"] = str(target)
        if out.exists():
            (out / "manifest.json").unlink()
        else:
            out.mkdir()
        (out / "manifest.json").write_text(json.dumps(manifest))
        code, lines = run_cli(capfd, ["verify", out, evil])
        text = "\n".join(lines)
        assert code == 1 and re.search(pattern, lines[0]) and lines[0].startswith("error: "), text
        assert "TOPSECRET" not in text and not any(c in text for c in RAW)
        assert len(lines) == 1


# --------------------------------------------------------------------------- pipes, warnings

@pytest.mark.parametrize("argv", [["configs", "list"], ["inspect", "MODEL"]],
                         ids=["click-echo", "rich"])
def test_closed_stdout_exits_141_quietly(tiny, argv):
    """`taalasc ... | head`: the reader has gone before taalasc writes."""
    read, write = os.pipe()
    os.close(read)
    try:
        done = _taalasc(*[tiny if a == "MODEL" else a for a in argv], stdout=write)
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (141, "")


def test_main_commands_raise_no_warning(tiny, tmp_path):
    """Every main command on a tiny model, plus models whose float32 arithmetic overflows or
    whose config does not fit float32, in one interpreter with every warning an error."""
    big = small_llama(tmp_path / "big", layers=4)
    shapes = llama_shapes(json.loads((big / "config.json").read_text()))
    rng = np.random.default_rng(0)
    write_safetensors(big / "model.safetensors",  # |w| up to 5e5: still quantizable
                      {n: (np.clip(rng.standard_normal(s) * 2e7, -5e5, 5e5) if len(s) == 2
                           else np.ones(s)).astype(np.float32) for n, s in shapes.items()},
                      "F32")
    theta = small_llama(tmp_path / "theta")
    config = json.loads((theta / "config.json").read_text())
    (theta / "config.json").write_text(json.dumps({**config, "rope_theta": 1e300}))
    out, out2 = tmp_path / "out", tmp_path / "out2"
    runs = [(0, ["compile", tiny, "-o", out, "--quiet"]),
            (0, ["compile", tiny, "-o", out2, "--quiet", "--bits", "3"]),
            (0, ["inspect", tiny]), (0, ["quantize", tiny, "--auto"]), (0, ["estimate", tiny]),
            (0, ["report", out]), (0, ["verify", out, tiny]),
            (0, ["simulate", tiny, "--tokens", "1,2,3"]),
            (0, ["faults", out, tiny, "--rate", "0.01", "--trials", "1", "--fragile", "2"]),
            (2, ["diff", out, out2, "-q"]), (0, ["simulate", big, "--tokens", "1,2,3,4"]),
            (1, ["simulate", theta, "--tokens", "1,2,3"])]
    script = ("import json, sys; from taalasc.cli import main; "
              "print(json.dumps([main(a) for a in json.loads(sys.argv[1])]))")
    done = subprocess.run([sys.executable, "-c", script,
                           json.dumps([[str(a) for a in argv] for _, argv in runs])],
                          capture_output=True, text=True, env=_env(PYTHONWARNINGS="error"),
                          timeout=300)
    assert "Warning" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == [code for code, _ in runs], done.stderr
    diff_line, theta_line = done.stderr.splitlines()
    assert diff_line.startswith("error: masks differ beyond --max-changed 0: ")
    assert theta_line == ("error: config.json: rope_theta must fit a float32 (the simulation "
                          "computes in float32), not 1e+300")


def test_entry_point_silences_library_warnings(tmp_path):
    """`taalasc` (cli.run) shows no warning unless -W or PYTHONWARNINGS asks for them."""
    script = tmp_path / "warn.py"
    script.write_text("import sys, warnings, click\n"
                      "from taalasc import cli\n"
                      "@click.command()\n"
                      "def noisy():\n"
                      "    warnings.warn('library noise', DeprecationWarning)\n"
                      "cli.COMMANDS['noisy'] = ('__main__', 'noisy', '')\n"
                      "sys.argv = ['taalasc', 'noisy']\n"
                      "cli.run()\n")
    env = {k: v for k, v in _env().items() if k != "PYTHONWARNINGS"}
    quiet = subprocess.run([sys.executable, script], capture_output=True, text=True, env=env)
    assert (quiet.returncode, quiet.stderr) == (0, "")
    loud = subprocess.run([sys.executable, "-W", "always", script], capture_output=True,
                          text=True, env=env)
    assert loud.returncode == 0 and "library noise" in loud.stderr


def test_a_base_yaml_that_is_not_a_mapping_is_not_quoted(tmp_path):
    """The loader's own refusal of such a file (verify never gets this far: it hashes first)."""
    from taalasc.config import load_base_array
    from taalasc.errors import ConfigError

    secret = tmp_path / "secret.yaml"
    secret.write_text("root:x:0:0:TOPSECRET:/root:/bin/bash\n" * 50)
    with pytest.raises(ConfigError) as info:
        load_base_array(secret)
    assert re.search(r"<top>: must be a mapping, not a string$", str(info.value))
    assert "TOPSECRET" not in str(info.value)


def test_diff_escapes_hostile_tensor_names(evil, evil_out, tmp_path):
    """diff's tables and markdown name tensors from the checkpoint: escaped like every other
    command's output."""
    import shutil

    changed = tmp_path / "model"
    shutil.copytree(evil, changed)
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(changed / "model.safetensors"))
    tensors[EVIL_MATRIX] = tensors[EVIL_MATRIX] * -1.0
    save_file(tensors, str(changed / "model.safetensors"))
    out = tmp_path / "out"
    assert cli.main(["compile", str(changed), "-o", str(out), "--quiet"]) == 0
    done = _taalasc("diff", evil_out, out, "--markdown", tmp_path / "pr.md")
    assert done.returncode in (0, 2), done.stderr
    text = done.stdout + (tmp_path / "pr.md").read_text()
    assert "pwned" in text and not any(c in text for c in RAW), text
