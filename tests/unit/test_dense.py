"""The dense scoring copy (dequantized weights + merged LoRA in nn.Linear) computes the quantized
PeftModel's function: logits agree within a stated tolerance, per quantizer, on the micro model."""

import pytest
import torch

from autoqra.models import prepare_model
from autoqra.plan import Plan
from autoqra.quant import BaseModel, build
from autoqra.quant.dense import dense_model, dequantized_weight

MICRO = {"source": "micro", "id": None, "revision": None, "micro": None}

# max |Δ logit| allowed (logits here are O(1)). Every quantized layer autoqra builds dequantizes and then
# multiplies in fp32 (packed HQQ, NF4 kept out of bnb's bf16 CPU repack, the weight-only int8 layer), so
# the dense copy differs by float rounding only.
TOLERANCE = {"hqq": 1e-5, "none": 1e-5, "nf4": 1e-5, "int8": 1e-5}


@pytest.fixture(scope="module")
def base(micro_model_dir):
    d = micro_model_dir
    return BaseModel(d)


def _trained_like(base, tmp_path, plan):
    built = build(base.model_dir, plan, cache_dir=tmp_path, base=base, lora_dropout=0.0)
    gen = torch.Generator().manual_seed(1)
    for name, p in built.model.named_parameters():
        if "lora_B" in name:  # as if trained: a zero B would hide a wrong merge
            p.data.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return built.model.eval()


@pytest.mark.parametrize("plan", [
    Plan.uniform(4, 2, 8, "hqq", group_size=32),
    Plan.uniform(4, 3, 16, "hqq", group_size=32),
    Plan.uniform(4, 4, 8, "nf4", group_size=32),
    Plan.uniform(4, 8, 4, "int8", group_size=32),
    Plan.uniform(4, 16, 8, "none"),
    Plan((2, 4, 8, 16), (4, 8, 16, 8), ("hqq", "nf4", "int8", "none"), group_size=32),
], ids=["hqq2", "hqq3", "nf4", "int8", "none", "mixed"])
def test_dense_copy_matches_quantized_peft_logits(base, tmp_path, plan):
    ids = torch.randint(0, 500, (3, 16), generator=torch.Generator().manual_seed(0))
    quantized = _trained_like(base, tmp_path, plan)
    with torch.no_grad():
        ref = quantized(input_ids=ids).logits
    # converted before any forward (the scoring path) and after one
    for model in (_trained_like(base, tmp_path, plan), quantized):
        dense = dense_model(model)
        assert not any(type(m).__name__ in ("PackedLinear", "HQQLinear", "Linear4bit", "Linear8bitLt",
                                            "Int8WeightOnlyLinear") for m in dense.modules())
        assert not any("lora_" in n for n, _ in dense.named_parameters())
        with torch.no_grad():
            got = dense(input_ids=ids).logits
        tol = max(TOLERANCE[q] for q in plan.quantizers)
        assert (got - ref).abs().max().item() <= tol
    # the merge matters: without the adapters the logits move by far more than the tolerance
    plain = build(base.model_dir, plan, cache_dir=tmp_path, base=base).model.eval()
    with torch.no_grad():
        assert (plain(input_ids=ids).logits - ref).abs().max().item() > 10 * tol


def test_dense_copy_leaves_shared_base_weights_alone(base, tmp_path):
    # a base that keeps its dense projections shares them with a 16-bit build: the merge must copy
    shared = BaseModel(base.model_dir, keep_dense=True)
    before = {n: p.clone() for n, p in shared.model.named_parameters()}
    dense_model(_trained_like(shared, tmp_path, Plan.uniform(4, 16, 8, "none")))
    assert all(torch.equal(before[n], p) for n, p in shared.model.named_parameters())


def test_dequantized_weight_names_an_unknown_layer():
    with pytest.raises(TypeError, match="no dequantizer for layer type Conv1d"):
        dequantized_weight(torch.nn.Conv1d(2, 2, 1))


def test_evaluator_scores_the_dense_copy_like_the_quantized_model(tmp_path):
    from dataclasses import replace

    from autoqra.data import prepare_data
    from autoqra.evaluate import EvalSettings, Evaluator
    from autoqra.train import Fidelity, TrainSettings

    prepare_model(MICRO, tmp_path / "m", seed=0)
    prepare_data({"source": "synthetic", "n_train": 32, "n_val": 16, "n_test": 4}, tmp_path / "data", seed=0)
    ev_settings = EvalSettings(batch_size=8, max_seq_len=96, max_examples=8, metric="neg_loss")
    plan = Plan((2, 4, 8, 16), (4, 8, 16, 8), ("hqq", "nf4", "hqq", "none"), group_size=32)
    recs = {}
    for dense in (False, True):
        ev = Evaluator(tmp_path / "m", tmp_path / "data", tmp_path / "cache", fidelities={"hf": Fidelity("hf", steps=2)},
                       train=TrainSettings(lr=1e-3, batch_size=4, max_seq_len=96, progress=False),
                       eval=replace(ev_settings, dense=dense), lora_dropout=0.0)
        recs[dense] = ev.evaluate(plan, "hf", seed=0)
    assert recs[True]["status"] == recs[False]["status"] == "ok" and not recs[True]["cached"]  # its own cache key
    assert recs[True]["train_loss"] == recs[False]["train_loss"]  # the same training
    assert recs[True]["score"] == pytest.approx(recs[False]["score"], abs=1e-3)
    assert "dense" not in ev_settings.key() and replace(ev_settings, dense=True).key()["dense"] is True
