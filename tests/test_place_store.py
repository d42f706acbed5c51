"""The placement file (place/store.py): written once, read back equal, refused when it is not
the compile's, in one line that names the file and what is wrong."""

import hashlib
import io
import json

import numpy as np
import pytest

from taalasc.config import load_base_array
from taalasc.errors import MaskError
from taalasc.place import plan_placement
from taalasc.place.plan import ROW_DTYPE
from taalasc.place.store import PLACEMENT_FILE, read_placement, write_placement
from test_place_plan import llama


@pytest.fixture(scope="module")
def placement():
    return plan_placement(llama(layers=6), load_base_array("sky130-demo"))


def _folder(tmp_path, placement, rows=None):
    """A folder holding a placement file of ``rows`` (default the placement's) and the
    manifest that lists it."""
    if rows is None:
        write_placement(tmp_path, placement)
    else:
        with open(tmp_path / PLACEMENT_FILE, "wb") as f:
            np.save(f, rows, allow_pickle=False)
    data = (tmp_path / PLACEMENT_FILE).read_bytes()
    return {"placement": placement.to_json(),
            "outputs": {PLACEMENT_FILE: {"bytes": len(data),
                                         "sha256": hashlib.sha256(data).hexdigest()}}}


def test_round_trip_and_numpy_reads_it_alone(tmp_path, placement):
    manifest = _folder(tmp_path, placement)
    back = read_placement(tmp_path, json.loads(json.dumps(manifest)))
    assert back.rows.tobytes() == placement.rows.tobytes()
    assert back.to_json() == placement.to_json()
    assert list(back.assignments) == list(placement.assignments)
    # plain numpy, no taalasc: the fields a reader needs, one row per used tile
    rows = np.load(tmp_path / PLACEMENT_FILE, allow_pickle=False)
    assert rows.dtype.names == tuple(manifest["placement"]["row_fields"])
    assert len(rows) == manifest["placement"]["tiles_used"] == placement.tiles_used
    # the same rows give the same bytes
    first = (tmp_path / PLACEMENT_FILE).read_bytes()
    write_placement(tmp_path, back)
    assert (tmp_path / PLACEMENT_FILE).read_bytes() == first


def _edited(placement, edit):
    rows = placement.rows.copy()
    edit(rows)
    return rows


BAD = [
    ("tensor", lambda r: r["tensor"].__setitem__(3, 999), r"row 3: tensor out of range"),
    ("die", lambda r: r["die"].__setitem__(-1, 7), r"row \d+: die out of range"),
    ("order", lambda r: r["die"].__setitem__(0, 1), r"row 1: die out of order"),
    ("kind", lambda r: r["kind"].__setitem__(5, 9), r"row 5: kind out of range"),
    ("extent", lambda r: r["row1"].__setitem__(2, r["row0"][2]), r"row 2: rows out of range"),
    ("twice", lambda r: r[["column", "row"]].__setitem__(4, r[["column", "row"]][5]),
     r"row 5: tile \(0, \d+, \d+\) already holds row 4.s segment"),
]


@pytest.mark.parametrize("name,edit,message", BAD, ids=[b[0] for b in BAD])
def test_rows_that_do_not_fit_the_manifest_are_refused(tmp_path, placement, name, edit, message):
    manifest = _folder(tmp_path, placement, _edited(placement, edit))
    with pytest.raises(MaskError, match=rf"^{tmp_path / PLACEMENT_FILE}: placement {message}"):
        read_placement(tmp_path, manifest)


def test_a_file_the_manifest_does_not_list_is_refused(tmp_path, placement):
    manifest = _folder(tmp_path, placement)
    rows = placement.rows.copy()
    rows["bits"][0] += 1
    with open(tmp_path / PLACEMENT_FILE, "wb") as f:   # changed after the compile
        np.save(f, rows, allow_pickle=False)
    with pytest.raises(MaskError, match=r": sha256 differs from the one manifest.json lists"):
        read_placement(tmp_path, manifest)
    del manifest["outputs"][PLACEMENT_FILE]
    with pytest.raises(MaskError, match=rf"^{tmp_path}/manifest.json: outputs must list "
                                        rf"{PLACEMENT_FILE}"):
        read_placement(tmp_path, manifest)


def test_other_arrays_and_other_files_are_refused(tmp_path, placement):
    wrong_type = np.zeros(placement.tiles_used, np.dtype([(n, "<i8") for n in ROW_DTYPE.names]))
    manifest = _folder(tmp_path, placement, wrong_type)
    with pytest.raises(MaskError, match=r"placement rows must be a 1-D array of"):
        read_placement(tmp_path, manifest)
    manifest = _folder(tmp_path, placement, placement.rows[:-1])
    with pytest.raises(MaskError, match=rf"has {placement.tiles_used - 1:,} rows, not the "):
        read_placement(tmp_path, manifest)
    # a pickled object array: np.load refuses it without running it
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / PLACEMENT_FILE).write_bytes(buffer.getvalue())
    manifest["outputs"][PLACEMENT_FILE]["sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    with pytest.raises(MaskError, match=r"not a NumPy .npy array"):
        read_placement(tmp_path, manifest)
    (tmp_path / PLACEMENT_FILE).unlink()
    with pytest.raises(MaskError, match=r"placement.npy: cannot read"):
        read_placement(tmp_path, manifest)


def test_a_folder_of_an_older_manifest_format_is_named_as_such(tmp_path):
    from taalasc.extract.extract import read_manifest

    (tmp_path / "manifest.json").write_text(json.dumps({"format": "taalasc-manifest/1"}))
    with pytest.raises(MaskError, match=r"written by another taalasc version \(format "
                                        r"taalasc-manifest/1, this one reads taalasc-manifest/2\); "
                                        r"compile the model again$"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(MaskError, match=r"not a taalasc manifest \(format taalasc-manifest/2\)"):
        read_manifest(tmp_path)
