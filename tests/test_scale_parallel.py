"""Parallel compile: --jobs 2 and a Dask LocalCluster write the same bytes as --jobs 1."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from taalasc.compile import CompileOptions, compile_model
from taalasc.errors import ConfigError, MaskError, PlacementError
from taalasc.model.synth import llama_config, write_llama
from taalasc.parallel import run_ordered

OPTIONS = CompileOptions(base="sky130-demo", formats=("gds", "oas"))


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def two_die(tmp_path_factory):
    """A Llama model spanning 2 dies of sky130-demo, compiled serially."""
    root = tmp_path_factory.mktemp("scale")
    model = root / "model"
    write_llama(model, llama_config(hidden=64, layers=2, heads=4, kv_heads=2,
                                    intermediate=192, vocab=512), seed=3)
    serial = compile_model(model, root / "serial", OPTIONS, jobs=1)
    assert serial.manifest["placement"]["dies"] == 2
    return root, model, _digests(root / "serial")


def test_jobs_2_gives_identical_bytes(two_die):
    root, model, expected = two_die
    compile_model(model, root / "jobs2", OPTIONS, jobs=2)
    got = _digests(root / "jobs2")
    assert {"die0.gds", "die1.gds", "die0.oas", "die1.oas", "manifest.json"} <= set(got)
    assert got == expected


def test_dask_local_cluster_gives_identical_bytes(two_die):
    distributed = pytest.importorskip("distributed")
    root, model, expected = two_die
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        compile_model(model, root / "dask", OPTIONS, scheduler=cluster)
    assert _digests(root / "dask") == expected


def test_worker_error_reaches_the_caller_unchanged(two_die, tmp_path):
    """A NaN weight in a tensor of die 1 fails inside a worker; nothing is installed."""
    import shutil

    from taalasc.errors import ModelError
    from taalasc.model import open_checkpoint

    root, model, _ = two_die
    broken = tmp_path / "broken"
    shutil.copytree(model, broken)
    info = open_checkpoint(broken).tensors["model.norm.weight"]   # placed near the end: die 1
    with open(info.file, "r+b") as fh:
        fh.seek(info.offset)
        fh.write(b"\xc0\x7f")                                      # BF16 NaN
    with pytest.raises(ModelError, match=r"^model\.norm\.weight: element 0 is nan"):
        compile_model(broken, tmp_path / "out", OPTIONS, jobs=2)
    assert not (tmp_path / "out").exists()


def test_run_ordered_keeps_input_order_and_checks_jobs():
    assert list(run_ordered(abs, [-3, 2, -1, 0, 5], jobs=2)) == [3, 2, 1, 0, 5]
    assert list(run_ordered(abs, [-1], jobs=1)) == [1]
    with pytest.raises(ConfigError, match=r"^--jobs: jobs must be a positive integer, not 0$"):
        run_ordered(abs, [1], jobs=0)


def test_die_compile_matches_the_full_compile(two_die):
    root, model, expected = two_die
    full = (root / "serial" / "manifest.json").read_text()
    part = compile_model(model, root / "die1", CompileOptions(
        base="sky130-demo", formats=("gds", "oas"), dies=(1,)))
    got = _digests(root / "die1")
    assert sorted(n for n in got if n.startswith("die")) == ["die1.gds", "die1.oas", "die1.png"]
    assert all(got[f"die1.{ext}"] == expected[f"die1.{ext}"] for ext in ("gds", "oas", "png"))
    dies = part.manifest["dies"]
    assert [d["present"] for d in dies] == [False, True]
    assert part.manifest["selection"] == {"layers": None, "dies": [1], "partial": True}
    import json
    assert dies[1] == json.loads(full)["dies"][1]
    # verify cannot check a partial compile and says which die is missing
    from taalasc.verify import verify
    with pytest.raises(MaskError, match=r"die 0 was not written \(a --die compile\); extraction needs every die of the placement$"):
        verify(root / "die1", model)
    with pytest.raises(PlacementError, match=r"^--die 2 must be a die of this placement, "
                                             r"0-1, not 2$"):
        compile_model(model, root / "bad", CompileOptions(formats=("gds",), dies=(2,)))
