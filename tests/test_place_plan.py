"""plan_placement: coverage, site counts, die spill, errors, determinism, JSON round trip."""

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from taalasc.config import load_base_array
from taalasc.errors import PlacementError
from taalasc.place import (Placement, TensorSpec, placement_stats, plan_placement, segments_of,
                           tensor_specs)

DEMO_YAML = Path(__file__).resolve().parents[1] / "base_array" / "sky130-demo.yaml"


def llama(hidden=64, layers=2, heads=4, kv=2, inter=128, vocab=256, bits=4, group=32):
    """TensorSpecs of a Llama-shaped model in dataflow order (the demo shape by default)."""
    hd = hidden // heads
    t = [TensorSpec("model.embed_tokens.weight", (vocab, hidden), bits, group, None)]
    for i in range(layers):
        p = f"model.layers.{i}."
        t += [TensorSpec(p + "input_layernorm.weight", (hidden,), None, None, i),
              TensorSpec(p + "self_attn.q_proj.weight", (heads * hd, hidden), bits, group, i),
              TensorSpec(p + "self_attn.k_proj.weight", (kv * hd, hidden), bits, group, i),
              TensorSpec(p + "self_attn.v_proj.weight", (kv * hd, hidden), bits, group, i),
              TensorSpec(p + "self_attn.o_proj.weight", (hidden, heads * hd), bits, group, i),
              TensorSpec(p + "post_attention_layernorm.weight", (hidden,), None, None, i),
              TensorSpec(p + "mlp.gate_proj.weight", (inter, hidden), bits, group, i),
              TensorSpec(p + "mlp.up_proj.weight", (inter, hidden), bits, group, i),
              TensorSpec(p + "mlp.down_proj.weight", (hidden, inter), bits, group, i)]
    t.append(TensorSpec("model.norm.weight", (hidden,), None, None, None))
    t.append(TensorSpec("lm_head.weight", (vocab, hidden), bits, group, None))
    return t


def make_base(tmp_path, **changes):
    """sky130-demo with ``section__key=value`` changes, loaded through the real validator.
    Without its frame (unless one is given): these bases put tiles at the die's edge."""
    data = yaml.safe_load(DEMO_YAML.read_text())
    data.pop("frame", None)
    for key, value in changes.items():
        section, name = key.split("__")
        if name:
            data[section][name] = value
        else:
            data[section] = value
    path = tmp_path / f"base-{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_base_array(path)


@pytest.fixture(scope="module")
def demo():
    return load_base_array("sky130-demo")


def _arrays(spec):
    """name/kind -> shape of every source array a tensor contributes."""
    if spec.bits is None:
        return {(spec.name, "vector"): (1, math.prod(spec.shape))}
    out, inp = spec.shape
    return {(spec.name, "codes"): (out, inp), (spec.name, "scales"): (out, spec.n_groups)}


@pytest.mark.parametrize("shape", [dict(), dict(hidden=96, inter=200, vocab=100, group=None, bits=3),
                                   dict(hidden=48, inter=80, vocab=50, bits=8, group=16)])
def test_every_element_placed_exactly_once(demo, shape):
    specs = llama(**shape)
    placement = plan_placement(specs, demo, max_dies=8)
    cover = {key: np.zeros(s, dtype=np.int32) for t in specs for key, s in _arrays(t).items()}
    for _, seg in placement.assignments:
        cover[(seg.tensor, seg.kind)][seg.rows[0]:seg.rows[1], seg.cols[0]:seg.cols[1]] += 1
        assert seg.used_sites <= demo.weight_tile.capacity_bits
        if seg.kind == "codes":
            assert seg.cols[1] - seg.cols[0] <= demo.weight_tile.input_lanes
    for key, hits in cover.items():
        assert (hits == 1).all(), key
    expected_bits = sum(math.prod(s) * (16 if k != "codes" else t.bits)
                        for t in specs for (n, k), s in _arrays(t).items())
    assert placement.sites_used == expected_bits
    assert placement_stats(placement, demo)["place__sites__used"] == expected_bits
    slots = [slot for slot, _ in placement.assignments]
    assert len(set(slots)) == len(slots)  # one segment per tile


def test_dataflow_order_and_blocking(demo):
    specs = llama()
    placement = plan_placement(specs, demo)
    order = list(dict.fromkeys(seg.tensor for _, seg in placement.assignments))
    assert order == [t.name for t in specs]
    q = placement.tiles_of("model.layers.0.self_attn.q_proj.weight")
    kinds = [seg.kind for _, seg in q]
    assert kinds == ["codes"] * 8 + ["scales"]  # 64x64 at 4 bits = 8 tiles of 16 rows x 32 cols
    assert [seg.rows for _, seg in q[:3]] == [(0, 16), (0, 16), (16, 32)]
    assert [seg.cols for _, seg in q[:3]] == [(0, 32), (32, 64), (0, 32)]
    assert q[-1][1].rows == (0, 64) and q[-1][1].cols == (0, 2)
    assert placement.tiles_of("nope") == []
    assert placement.layer_of("model.layers.1.mlp.up_proj.weight") == 1


def test_spills_onto_more_dies(demo):
    specs = llama(layers=6)
    placement = plan_placement(specs, demo)
    assert placement.dies == 3
    per_die = demo.tile_grid.tiles
    dies = [slot.die for slot, _ in placement.assignments]
    assert dies == sorted(dies) and dies.count(0) == per_die and dies.count(1) == per_die
    assert placement.cross_die_links == 2
    assert len(placement.links) == len(placement.assignments) - 1 - 2
    assert all(a.die == b.die for a, b in placement.links)


def test_too_big_model_is_refused_with_the_numbers(demo):
    # By hand: a layer is 72 code tiles + 10 scale tiles + 2 norm tiles (167,936 bits);
    # embedding and head 32 + 4 tiles each (73,728 bits); final norm 1 tile (1,024 bits).
    with pytest.raises(PlacementError, match=(
            r"^model needs 1,156,096 bits in 577 weight tiles, but base array sky130-demo has "
            r"256 tiles per die and allows 2 dies \(512 tiles\); 3 dies would be needed; "
            r"built-in bases that hold it: gf180mcu-chip \(1 die\), ihp-sg13g2-reticle "
            r"\(1 die\), sky130-reticle \(1 die\)$")):
        plan_placement(llama(layers=6), demo, max_dies=2)


def test_tensor_errors_name_the_tensor(demo, tmp_path):
    with pytest.raises(PlacementError, match=r"^tensor 'w': bits must be at most 8 "
                                             r"\(weight_tile.max_weight_bits of sky130-demo\)"):
        plan_placement([TensorSpec("w", (4, 4), 9, None, None)], demo)
    small = make_base(tmp_path, weight_tile__max_weight_bits=4)
    with pytest.raises(PlacementError, match=r"^tensor 'w': bits must be at most 4 .*not 6$"):
        plan_placement([TensorSpec("w", (4, 4), 6, None, None)], small)
    with pytest.raises(PlacementError, match=r"^tensor 'm': a 2-D tensor of shape \(4, 4\) must be quantized"):
        plan_placement([TensorSpec("m", (4, 4), None, None, None)], demo)
    with pytest.raises(PlacementError, match=r"^tensor 'g': group size 3 does not divide in_features 8$"):
        plan_placement([TensorSpec("g", (4, 8), 4, 3, None)], demo)
    with pytest.raises(PlacementError, match=r"^tensor 'd' is listed more than once$"):
        plan_placement([TensorSpec("d", (4,), None, None, None)] * 2, demo)
    with pytest.raises(PlacementError, match=r"^curve must be one of gilbert, gilbert-runs"):
        plan_placement([TensorSpec("d", (4,), None, None, None)], demo, curve="zigzag")


def test_row_that_does_not_fit_a_tile(demo):
    # Only reachable with a base the validator would refuse (lanes * bits > sites): build it.
    import dataclasses
    tile = dataclasses.replace(demo.weight_tile, input_lanes=1024)
    base = dataclasses.replace(demo, weight_tile=tile)
    with pytest.raises(PlacementError, match=r"^tensor 'w': one codes row of 1024 elements at 4 "
                                             r"bits needs 4096 sites, but a weight tile has 2048$"):
        segments_of(TensorSpec("w", (8, 1024), 4, None, None), base)


def test_deterministic_and_json_round_trip(demo):
    import json
    a = plan_placement(llama(layers=3), demo)
    b = plan_placement(llama(layers=3), demo)
    assert json.dumps(a.to_json()) == json.dumps(b.to_json())
    assert a.rows.tobytes() == b.rows.tobytes()
    text = json.dumps(a.to_json(), sort_keys=True)
    back = Placement.from_json(json.loads(text), a.rows.copy())
    assert list(back.assignments) == list(a.assignments) and list(back.links) == list(a.links)
    assert json.dumps(back.to_json(), sort_keys=True) == text
    with pytest.raises(PlacementError, match=r"^placement JSON: malformed \(KeyError"):
        Placement.from_json({"row_fields": a.to_json()["row_fields"]}, a.rows)


def test_rows_equal_the_segments_of_each_tensor_in_order(demo):
    """The columnar rows against the per-tensor rule (segments_of), tile by tile, and the
    links against their definition (consecutive tiles of one die)."""
    specs = llama(layers=6)
    placement = plan_placement(specs, demo)
    want = [seg for spec in specs for seg in segments_of(spec, demo)]
    assert [seg for _, seg in placement.assignments] == want
    pairs = list(placement.assignments)
    assert list(placement.links) == [(a, b) for (a, _), (b, _) in zip(pairs, pairs[1:])
                                     if a.die == b.die]
    for die in range(placement.dies):
        assert placement.on_die(die) == tuple(p for p in pairs if p[0].die == die)
        part = placement.die_part(die)
        assert list(part.links) == [(a, b) for a, b in placement.links if a.die == die]
    for slot, seg in pairs[::37]:
        assert placement.segment_at(slot.die, slot.column, slot.row) == seg
    assert placement.segment_at(9, 0, 0) is None
    assert placement.sites_used == sum(seg.used_sites for seg in want)


def test_tensor_specs_from_checkpoint_like():
    class Info:
        def __init__(self, shape):
            self.shape = shape

    class Ckpt:
        tensors = {"e.weight": Info((10, 4)), "layers.0.n.weight": Info((4,))}

        def layer_of(self, name):
            return 0 if name.startswith("layers.0") else None

    from taalasc.quant import QuantSpec
    specs = tensor_specs(Ckpt(), {"e.weight": QuantSpec(3, None)})
    assert specs == [TensorSpec("e.weight", (10, 4), 3, None, None),
                     TensorSpec("layers.0.n.weight", (4,), None, None, 0)]
