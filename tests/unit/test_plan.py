import json

import pytest

from autoqra.errors import PlanError
from autoqra.plan import (
    PROJECTIONS,
    Ladders,
    Plan,
    projection_module,
    quantizer_map,
    quantizers_for,
)


def test_json_round_trip_and_hash_stable(tmp_path):
    p = Plan((2, 3, 4, 8), (4, 8, 16, 8), meta={"origin": "test"})
    path = p.save(tmp_path / "plan.json")
    q = Plan.load(path)
    assert q == p and q.hash == p.hash
    assert json.loads(path.read_text())["granularity"] == "block"
    # meta does not change identity; bits/ranks/quantizers/group size/HQQ axis do
    assert p.replace(meta={"other": 1}).hash == p.hash
    assert p.replace(bits=[2, 3, 4, 4]).hash != p.hash
    assert p.replace(group_size=64).hash != p.hash
    assert p.replace(hqq_axis=1).hash != p.hash
    assert p.replace(quantizers=["hqq", "hqq", "nf4", "hqq"]).hash != p.hash
    assert len(p.hash) == 16


def test_hash_is_content_based_not_object_based():
    # Recorded value: a change of the canonical serialisation would silently invalidate every cache.
    assert Plan.uniform(2, 4, 8).hash == Plan((4, 4), (8, 8)).hash
    assert Plan.uniform(2, 4, 8).hash == Plan((4, 4), (8, 8), ("hqq", "hqq"), 128, 0).hash
    assert Plan.uniform(2, 4, 8).hash == "3784c399e18ad2a3"


@pytest.mark.parametrize("bits,ranks,msg", [
    ((4, 5), (8, 8), "not allowed"),
    ((4, 4), (8, 0), "positive"),
    ((4, 4), (8,), "2 bits but 1 ranks"),
    ((), (), "no blocks"),
])
def test_invalid_plans_rejected(bits, ranks, msg):
    with pytest.raises(PlanError, match=msg):
        Plan(bits, ranks)


@pytest.mark.parametrize("bits,quantizers,msg", [
    ((3, 4), ("nf4", "nf4"), r"plan block 0: quantizer 'nf4' cannot store 3-bit weights \(it stores 4 bits\)"),
    ((4, 4), ("nf4", "int8"), r"plan block 1: quantizer 'int8' cannot store 4-bit"),
    ((16, 4), ("hqq", "hqq"), r"plan block 0: quantizer 'hqq' cannot store 16-bit weights \(it stores 2, 3, 4, 8"),
    ((4, 8), ("nf4", "none"), r"plan block 1: quantizer 'none' cannot store 8-bit"),
    ((4, 8), ("nf4", "gptq"), r"quantizer 'gptq' unknown; expected one of \['hqq', 'nf4', 'int8', 'none'\]"),
    ((4, 8), ("nf4",), "2 blocks but 1 quantizers"),
])
def test_impossible_quantizer_bit_pairs_refused(bits, quantizers, msg):
    with pytest.raises(PlanError, match=msg):
        Plan(bits, (8,) * len(bits), quantizers)


def test_quantizers_come_from_a_map():
    qmap = {2: "hqq", 3: "hqq", 4: "nf4", 8: "int8"}
    assert quantizers_for((2, 4, 8, 16, 3), qmap) == ("hqq", "nf4", "int8", "none", "hqq")
    assert quantizers_for((2, 4, 8, 16)) == ("hqq", "hqq", "hqq", "none")  # default: HQQ, dense at 16
    p = Plan.mapped((4, 8, 16), (8, 8, 8), qmap, group_size=64, hqq_axis=1)
    assert p.quantizers == ("nf4", "int8", "none") and p.quantizer_label == "nf4+int8"
    assert quantizer_map({"4": "nf4"})[4] == "nf4"  # JSON keys are strings
    with pytest.raises(PlanError, match=r"search_space.quantizers.3: quantizer 'int8' cannot store 3-bit"):
        quantizer_map({3: "int8"}, key="search_space.quantizers")
    with pytest.raises(PlanError, match="bit-width 5 not allowed"):
        quantizer_map({5: "hqq"})
    assert Plan.uniform(3, 16, 8).quantizers == ("none",) * 3


def test_old_plan_files_with_a_backend_still_load(tmp_path):
    old = {"bits": [2, 4, 8, 16], "ranks": [4, 8, 8, 4], "granularity": "block", "backend": "hqq", "group_size": 64}
    p = Plan.from_dict(old)
    assert p.quantizers == ("hqq", "hqq", "hqq", "none") and p.hqq_axis == 1  # what hqq 0.2 quantized with
    p = Plan.from_dict({**old, "backend": "bnb", "bits": [4, 8, 16, 4]})
    assert p.quantizers == ("nf4", "int8", "none", "nf4")
    assert Plan.from_dict({**old, "backend": "none", "bits": [16] * 4}).quantizers == ("none",) * 4
    with pytest.raises(PlanError, match=r"old.json: backend 'bnb' cannot store bits \[2\]"):
        Plan.from_dict({**old, "backend": "bnb"}, source="old.json")
    with pytest.raises(PlanError, match=r"plan backend 'gptq' unknown"):
        Plan.from_dict({**old, "backend": "gptq"})
    with pytest.raises(PlanError, match="not both"):
        Plan.from_dict({**old, "quantizers": ["hqq"] * 4})
    # a new file round-trips with its quantizers, group size and axis
    new = Plan.mapped((2, 4, 8, 16), (4, 8, 8, 4), {4: "nf4", 8: "int8"}, 64, 0)
    d = json.loads(new.save(tmp_path / "p.json").read_text())
    assert d["quantizers"] == ["hqq", "nf4", "int8", "none"] and d["hqq_axis"] == 0 and "backend" not in d
    assert Plan.load(tmp_path / "p.json") == new


def test_from_dict_errors_name_the_source(tmp_path):
    f = tmp_path / "bad.json"
    f.write_text('{"bits": [4, 4], "ranks": [8, 8], "rnaks": 1}')
    with pytest.raises(PlanError, match=r"bad.json.*unknown key.*rnaks"):
        Plan.load(f)
    f.write_text('{"bits": [4, 4]')
    with pytest.raises(PlanError, match=r"bad.json: invalid JSON at line 1"):
        Plan.load(f)
    f.write_text('{"bits": ["4"], "ranks": [8]}')
    with pytest.raises(PlanError, match="list of integers"):
        Plan.load(f)
    with pytest.raises(PlanError, match="does not exist"):
        Plan.load(tmp_path / "missing.json")


def test_check_against_model_and_ladders():
    p = Plan((2, 16), (4, 32))
    with pytest.raises(PlanError, match="2 blocks, the model has 3"):
        p.check(n_blocks=3)
    with pytest.raises(PlanError, match=r"bits \[16\] are not on the ladder"):
        p.check(ladders=Ladders((2, 3, 4, 8), (4, 32)))
    with pytest.raises(PlanError, match=r"ranks \[32\]"):
        p.check(ladders=Ladders((2, 16), (4, 8)))
    assert p.check(n_blocks=2, ladders=Ladders((16, 2), (32, 4))) is p


def test_ladders_sorted_and_validated():
    assert Ladders((8, 2, 4), (16, 4)).bits == (2, 4, 8)
    with pytest.raises(PlanError, match="allowed bit-widths"):
        Ladders((1, 4), (8,))
    with pytest.raises(PlanError, match="empty"):
        Ladders((), (8,))


def test_rank_pattern_matches_exactly_one_module_as_peft_does():
    import re

    plan = Plan((4,) * 12, tuple([4] * 11 + [16]))
    pattern = plan.rank_pattern()
    alpha = plan.alpha_pattern(2.0)
    modules = [f"base_model.model.{projection_module(b, p)}" for b in range(12) for p in PROJECTIONS]
    assert len(pattern) == 12 * 7
    for name in modules:
        # peft's matching rule: re.match(rf"(.*\.)?({key})$", name)
        hits = [k for k in pattern if re.match(rf"(.*\.)?({k})$", name)]
        assert len(hits) == 1, (name, hits)
        block = int(name.split("layers.")[1].split(".")[0])
        assert pattern[hits[0]] == plan.ranks[block]
        assert alpha[hits[0]] == 2 * plan.ranks[block]
    assert plan.module_bits()["model.layers.11.mlp.down_proj"] == 4
    assert plan.module_ranks()["model.layers.11.self_attn.k_proj"] == 16


def test_average_bits_weighted():
    assert Plan((2, 8), (4, 4)).average_bits() == 5.0
    assert Plan((2, 8), (4, 4)).average_bits([3, 1]) == pytest.approx(3.5)
