"""verify holds one tensor at a time: extraction to files equals extraction to memory, and
verify's peak memory does not grow with the number of layers."""

import json
import shutil
import tempfile
import tracemalloc

import gdstk
import numpy as np
import pytest

import taalasc.folder  # noqa: F401  (verify imports these on its first call: imported
import taalasc.rebuilt  # noqa: F401  here, their module objects are not measured below)
import taalasc.sim  # noqa: F401

from taalasc.cli import main
from taalasc.config import load_base_array
from taalasc.custom.names import local_name
from taalasc.extract.extract import ExtractedWeights, chip_weights, extract
from taalasc.model.synth import llama_config, write_llama
from taalasc.quant import QuantizedTensor
from taalasc.verify import verify
from test_verify_flow import _move_one_via, _tile_of


@pytest.fixture(scope="module")
def asym(tmp_path_factory):
    """A compile over several dies with asymmetric codes (so minimums too), and a copy
    with one bit via moved (a difference) and one tie via removed (a defect per tile)."""
    root = tmp_path_factory.mktemp("asym")
    model = write_llama(root / "m", llama_config(hidden=96, layers=4, intermediate=256,
                                                 vocab=512))
    out = root / "o"
    assert main(["compile", str(model), "-o", str(out), "--format", "gds", "--asym",
                 "--quiet"]) == 0
    broken = root / "broken"
    shutil.copytree(out, broken)
    manifest = json.loads((out / "manifest.json").read_text())
    slot, _ = _tile_of(out, "model.layers.1.mlp.up_proj.weight")
    die = broken / manifest["dies"][slot.die]["files"]["gds"]
    _move_one_via(die, die, slot, 5, load_base_array(manifest["inputs"]["base_array"]["name"]))
    lib = gdstk.read_gds(str(die))
    ties = next(c for c in lib.cells if local_name(c.name) == "TIES")
    ties.remove(ties.polygons[3])
    lib.write_gds(str(die))
    return model, out, broken, manifest


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    as_bits = (lambda x: x.view(np.uint16)) if a.dtype == np.float16 else (lambda x: x)
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(as_bits(a), as_bits(b))


@pytest.mark.parametrize("jobs", [1, 2])
@pytest.mark.parametrize("which", ["clean", "broken"])
def test_extraction_to_files_equals_extraction_to_memory(asym, tmp_path, jobs, which):
    _, out, broken, manifest = asym
    folder = out if which == "clean" else broken
    memory = extract(folder, "gds", jobs=jobs)
    files = extract(folder, "gds", jobs=jobs, folder=tmp_path)
    assert manifest["placement"]["dies"] >= 3 and len(memory.mins) > 0
    for kind in ("codes", "scales", "mins", "vectors"):
        held, read = getattr(memory, kind), getattr(files, kind)
        assert list(held) == list(read)
        for name in held:
            assert _same(held[name], read[name]), (kind, name)
    assert (files.defects, files.defect_count, files.vias_read) == \
        (memory.defects, memory.defect_count, memory.vias_read)
    assert (memory.defect_count > 0) == (which == "broken")
    # The chip weights over the files are those over memory, made on each access.
    lazy = ExtractedWeights(files, manifest["quantization"])
    eager = chip_weights(memory, manifest["quantization"])
    assert list(lazy) == list(eager)
    for name, value in eager.items():
        got = lazy[name]
        if isinstance(value, QuantizedTensor):
            assert (got.shape, got.bits, got.group_size, got.ternary) == \
                (value.shape, value.bits, value.group_size, value.ternary)
            assert _same(got.codes, value.codes) and _same(got.scales, value.scales)
            assert _same(got.mins, value.mins)
        else:
            assert _same(got, value)


def test_verify_results_same_on_broken_masks_for_any_jobs(asym):
    model, _, broken, _ = asym
    one, two = verify(broken, model, jobs=1), verify(broken, model, jobs=2)
    assert one.to_dict() == two.to_dict()
    assert not one.passed and one.defect_count > 0 and one.defects
    assert any("up_proj" in m for m in one.mismatches)


def _held_by_extraction(tmp_path, layers: int) -> int:
    """Bytes verify holds because of the extraction (numpy arrays included): the most
    allocated from the extraction on (codes check, chip model) above what the rebuild left."""
    model = write_llama(tmp_path / f"m{layers}", llama_config(
        hidden=256, layers=layers, intermediate=512, vocab=256))
    out = tmp_path / f"o{layers}"
    assert main(["compile", str(model), "-o", str(out), "--format", "gds",
                 "--base", "sky130-reticle", "--quiet"]) == 0
    seen: dict[str, int] = {}

    def tick(stage, done, total):
        if stage in ("rebuild", "extract") and done == total:
            seen[stage] = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()   # the die decode before this is bounded by the die

    tracemalloc.start()
    try:
        result = verify(out, model, progress=tick)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.passed
    return max(seen["extract"], peak) - seen["rebuild"]


def test_verify_holds_one_tensor_not_the_extracted_model(tmp_path):
    """Four layers against one, same largest tensor: holding the extracted model (as
    verify did) grows this by the ~2 MB of extra codes and scales; read tensor by tensor
    from the scratch files it grows by the manifest only (measured: 1.9 MB before, 0.1 MB)."""
    small, large = _held_by_extraction(tmp_path, 1), _held_by_extraction(tmp_path, 4)
    assert large - small < 500_000, (small, large)


@pytest.mark.parametrize("how", ["ctrl-c", "bad die file"])
def test_the_scratch_folder_is_removed_on_every_way_out(asym, tmp_path, monkeypatch, capsys,
                                                        how):
    model, out, _, manifest = asym
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    seen = []
    if how == "ctrl-c":   # Ctrl-C reaches the main process as KeyboardInterrupt
        def interrupted(*args, **kwargs):
            seen.extend(scratch.glob("*/extracted/*"))
            raise KeyboardInterrupt
        monkeypatch.setattr(taalasc.sim, "run_chip", interrupted)
        folder, code, error = out, 130, "error: interrupted\n"
    else:
        folder = tmp_path / "bad"
        shutil.copytree(out, folder)
        die = folder / manifest["dies"][-1]["files"]["gds"]
        die.write_bytes(die.read_bytes()[:1000])
        code, error = 1, "error: "
    assert main(["verify", str(folder), str(model)]) == code
    err = capsys.readouterr().err
    assert err.startswith(error) and err.count("\n") == 1, err
    assert list(scratch.iterdir()) == []
    assert how != "ctrl-c" or seen   # interrupted with the extracted values on disk
