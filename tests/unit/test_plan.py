import json

import pytest

from autoqra.errors import PlanError
from autoqra.plan import PROJECTIONS, Ladders, Plan, projection_module


def test_json_round_trip_and_hash_stable(tmp_path):
    p = Plan((2, 3, 4, 8), (4, 8, 16, 8), meta={"origin": "test"})
    path = p.save(tmp_path / "plan.json")
    q = Plan.load(path)
    assert q == p and q.hash == p.hash
    assert json.loads(path.read_text())["granularity"] == "block"
    # meta does not change identity; bits/ranks/backend/group size do
    assert p.replace(meta={"other": 1}).hash == p.hash
    assert p.replace(bits=[2, 3, 4, 4]).hash != p.hash
    assert p.replace(group_size=64).hash != p.hash
    assert p.replace(backend="none").hash != p.hash
    assert len(p.hash) == 16


def test_hash_is_content_based_not_object_based():
    # Recorded value: a change of the canonical serialisation would silently invalidate every cache.
    assert Plan.uniform(2, 4, 8).hash == Plan((4, 4), (8, 8)).hash
    assert Plan.uniform(2, 4, 8).hash == "4e9f2aabab895d29"


@pytest.mark.parametrize("bits,ranks,msg", [
    ((4, 5), (8, 8), "not allowed"),
    ((4, 4), (8, 0), "positive"),
    ((4, 4), (8,), "2 bits but 1 ranks"),
    ((), (), "no blocks"),
])
def test_invalid_plans_rejected(bits, ranks, msg):
    with pytest.raises(PlanError, match=msg):
        Plan(bits, ranks)


def test_bnb_backend_only_4_8_16():
    Plan((4, 8, 16), (8, 8, 8), backend="bnb")
    with pytest.raises(PlanError, match="bnb"):
        Plan((3, 4), (8, 8), backend="bnb")


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
