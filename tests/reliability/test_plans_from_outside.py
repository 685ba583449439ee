"""Plans written by hand or by another tool, given to `autoqra memory` and `autoqra.load`: every
malformed plan is refused with a message naming the file and what was expected (exit code 2 on the
command line, PlanError in Python), before any model is built."""

import json
import re
import shutil

import pytest

from autoqra.cli import main
from autoqra.errors import PlanError
from autoqra.plan import Plan

pytestmark = pytest.mark.reliability

OK = {"bits": [4, 4, 4, 4], "ranks": [8, 8, 8, 8], "quantizers": ["hqq", "nf4", "hqq", "nf4"], "group_size": 32,
      "hqq_axis": 0}
OLD = {"bits": [4, 4, 4, 4], "ranks": [8, 8, 8, 8], "backend": "hqq", "group_size": 32}  # before per-block quantizers

BAD_PLANS = [
    ({**OK, "bits": [4, 4, 4], "ranks": [8, 8, 8], "quantizers": ["nf4"] * 3}, "plan has 3 blocks, the model has 4"),
    ({**OK, "bits": [4, 4, 4, 4, 4], "ranks": [8] * 5, "quantizers": ["hqq"] * 5}, "plan has 5 blocks, the model has 4"),
    ({**OK, "bits": [4, 4, 5, 4]}, r"plan bits \[5\] not allowed; expected values in \[2, 3, 4, 8, 16\]"),
    ({**OK, "bits": [4, 1, 4, 32]}, r"plan bits \[1, 32\] not allowed"),
    ({**OK, "ranks": [8, 8, 0, 8]}, "plan ranks must be positive integers"),
    ({**OK, "ranks": [8, 8, 8]}, "plan has 4 bits but 3 ranks; expected one of each per block"),
    ({"bits": [4, 4, 4, 4]}, r"missing key\(s\) \['ranks'\]"),
    ({**OK, "bits": ["4", 4, 4, 4]}, "'bits' must be a list of integers"),
    ({**OK, "bits": [True, 4, 4, 4]}, "'bits' must be a list of integers"),
    ({**OK, "ranks": [8.5, 8, 8, 8]}, "'ranks' must be a list of integers"),
    ({**OK, "quantizers": ["hqq", "gptq", "hqq", "hqq"]}, r"plan block 1: quantizer 'gptq' unknown; expected one of "
                                                          r"\['hqq', 'nf4', 'int8', 'none'\]"),
    ({**OK, "bits": [2, 4, 4, 4], "quantizers": ["nf4"] * 4}, r"plan block 0: quantizer 'nf4' cannot store 2-bit "
                                                             r"weights \(it stores 4 bits\)"),
    ({**OK, "bits": [16, 4, 4, 4]}, r"plan block 0: quantizer 'hqq' cannot store 16-bit weights"),
    ({**OK, "quantizers": ["hqq"] * 3}, "plan has 4 blocks but 3 quantizers; expected one per block"),
    ({**OK, "quantizers": "hqq"}, "'quantizers' must be a list of quantizer names"),
    ({**OK, "hqq_axis": 2}, "plan hqq_axis must be 0 or 1, got 2"),
    ({**OLD, "backend": "gptq"}, r"plan backend 'gptq' unknown; expected one of \['hqq', 'bnb', 'none'\]"),
    ({**OLD, "backend": "bnb", "bits": [2, 4, 4, 4]}, r"backend 'bnb' cannot store bits \[2\]; it stores \[4, 8, 16\]"),
    ({**OLD, "quantizers": ["hqq"] * 4}, "give 'quantizers' .* or the old 'backend', not both"),
    ({**OK, "group_size": 0}, "plan group_size must be a positive integer"),
    ({**OK, "granularity": "layer"}, "plan granularity 'layer' unsupported; expected 'block'"),
    ({**OK, "extra": 1}, r"unknown key\(s\) \['extra'\]"),
    ([4, 4, 4, 4], "expected a JSON object with 'bits' and 'ranks'"),
]


@pytest.fixture(scope="module")
def model_dir(micro_run):
    return micro_run / "results/models/micro/hf"


@pytest.mark.parametrize("plan,expect", BAD_PLANS, ids=[e[:40] for _, e in BAD_PLANS])
def test_memory_cli_refuses_bad_plans(model_dir, tmp_path, capsys, plan, expect):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    assert main(["memory", "--model", str(model_dir), "--plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err
    assert re.search(expect, err), err


@pytest.mark.parametrize("text,expect", [(None, "does not exist"), ('{"bits": [4,', "invalid JSON at line 1")])
def test_memory_cli_unreadable_plan_file(model_dir, tmp_path, capsys, text, expect):
    path = tmp_path / "plan.json"
    if text is not None:
        path.write_text(text)
    assert main(["memory", "--model", str(model_dir), "--plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and expect in err


def test_memory_cli_refuses_a_directory_that_is_not_a_model(tmp_path, capsys):
    assert main(["memory", "--model", str(tmp_path), "--bits", "4"]) == 2
    assert "expected a model directory with config.json" in capsys.readouterr().err


@pytest.mark.parametrize("plan,expect", [BAD_PLANS[0], BAD_PLANS[2], BAD_PLANS[4], BAD_PLANS[10]])
def test_load_refuses_bad_plans(micro_run, model_dir, tmp_path, plan, expect):
    import autoqra

    adapter = micro_run / "results/finetune/micro/hqq4/s0/adapter"
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    with pytest.raises(PlanError, match=expect) as err:
        autoqra.load(model_dir, path, adapter, cache_dir=tmp_path / "cache")
    assert str(path) in str(err.value)


def test_load_refuses_an_adapter_of_another_plan_and_a_missing_adapter(micro_run, model_dir, tmp_path):
    import autoqra

    r = micro_run / "results"
    other = r / "methods/micro/lora16/plan.json"
    with pytest.raises(PlanError, match=r"adapter was trained for plan \w+, not \w+"):
        autoqra.load(model_dir, other, r / "finetune/micro/hqq4/s0/adapter", cache_dir=tmp_path / "cache")
    copy = tmp_path / "adapter"
    shutil.copytree(r / "finetune/micro/hqq4/s0/adapter", copy)
    (copy / "adapter_model.safetensors").unlink()
    with pytest.raises(PlanError, match="no adapter_model.safetensors"):
        autoqra.load(model_dir, r / "methods/micro/hqq4/plan.json", copy, cache_dir=tmp_path / "cache")
    built = autoqra.load(model_dir, r / "methods/micro/hqq4/plan.json", r / "finetune/micro/hqq4/s0/adapter",
                         cache_dir=tmp_path / "cache")
    assert built.plan.hash == Plan.load(r / "methods/micro/hqq4/plan.json").hash
