"""A built model trains and measures the same whatever ran on it before (issue #27), for every quantizer on
the micro model: an eval-mode forward (what every evaluation does) changes neither the next training step's
LoRA gradients, nor the stored bytes, nor the saved adapter and its ``autoqra.load`` round trip.

bitsandbytes 0.50.2 repacks an NF4 weight in place at its first eval-mode forward on CPUs with AVX512-BF16
(the packed layer passes no gradient to its input). The tests that need a packed layer make one with bnb's
own conversion (what ``Linear4bit.forward`` calls), so they run on any CPU; the one that needs bnb's packed
kernel is skipped where the CPU lacks AVX512-BF16 (there bitsandbytes never repacks).
"""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from autoqra.plan import PROJECTIONS, Plan, projection_module  # noqa: E402
from autoqra.quant import BaseModel, build, load, save_adapter, verify  # noqa: E402
from autoqra.quant.backends import (  # noqa: E402
    bnb_nf4_layers,
    dequantized_weight,
    enable_cpu_inference_kernel,
    keep_training_layout,
    nf4_cpu_packed,
    stored_bytes,
)
from autoqra.train import Fidelity, TrainSettings, response_loss_sum, train_lora  # noqa: E402
from autoqra.train_memory import held_tensor_bytes  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/unit/conftest.py

PLANS = {f"hqq{b}": Plan.uniform(4, b, 4, "hqq", group_size=32) for b in (2, 3, 4, 8)}
PLANS |= {"nf4": Plan.uniform(4, 4, 4, "nf4"), "int8": Plan.uniform(4, 8, 4, "int8"),
          "none": Plan.uniform(4, 16, 4, "none")}
SETTINGS = TrainSettings(lr=1e-2, batch_size=4, max_seq_len=32, divergence_factor=None, progress=False)


@pytest.fixture(scope="module")
def base(micro_model_dir):
    return BaseModel(micro_model_dir)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("evaltrain-cache")


def _records(n: int = 8, length: int = 24) -> list[dict]:
    """Tokenized examples (random ids, the second half supervised) that train_lora takes as they are."""
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        ids = torch.randint(3, 500, (length,), generator=g).tolist()
        out.append({"input_ids": ids, "labels": [-100] * (length // 2) + ids[length // 2:]})
    return out


def _build(base, cache, plan):
    """A fresh model whose LoRA B is non-zero, so that every adapter tensor gets a gradient."""
    built = build(base.model_dir, plan, cache_dir=cache, base=base, seed=3, lora_dropout=0.0)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for n, p in built.model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return built


def _evaluate(model) -> torch.Tensor:
    """What every evaluation does to a model: an eval-mode forward without gradients."""
    was = model.training
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([r["input_ids"] for r in _records(2, 16)])).logits
    model.train(was)
    return logits


def _lora_grads(model) -> dict[str, torch.Tensor]:
    from autoqra.data import collate

    model.train()
    model.zero_grad(set_to_none=True)
    loss, _ = response_loss_sum(model, collate(_records(4), pad_id=0))
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if "lora_" in n}


def _layers(built):
    inner = built.model.get_base_model()
    return {(b, p): inner.get_submodule(projection_module(b, p)).get_base_layer()
            for b in range(len(built.plan.bits)) for p in PROJECTIONS}


def _repack_like_bnb(model) -> None:
    """What bnb's Linear4bit.forward does to its weight in eval mode on an AVX512-BF16 CPU (the kernel aside)."""
    from bitsandbytes.functional import _convert_weight_packed_for_cpu

    for _, m in bnb_nf4_layers(model):
        m.weight.data, m.weight.quant_state = _convert_weight_packed_for_cpu(m.weight.data, m.weight.quant_state)


@pytest.mark.parametrize("name", list(PLANS))
def test_training_step_after_an_evaluation_has_the_same_lora_gradients(base, cache, name):
    want = _lora_grads(_build(base, cache, PLANS[name]).model)
    built = _build(base, cache, PLANS[name])
    _evaluate(built.model)
    assert not any(nf4_cpu_packed(m) for _, m in bnb_nf4_layers(built.model))
    got = _lora_grads(built.model)
    assert set(got) == set(want) and len(want) == 2 * 7 * 4
    block0 = [n for n in want if ".layers.0." in n]
    assert all(want[n].abs().sum() > 0 for n in block0)  # the first block's gradients carry signal
    for n in want:
        assert torch.equal(got[n], want[n]), f"{n}: LoRA gradient changed by an evaluation before the step"


@pytest.mark.parametrize("name", list(PLANS))
def test_stored_bytes_after_an_evaluation_equal_the_bytes_before(base, cache, name):
    built = _build(base, cache, PLANS[name])
    before = {k: stored_bytes(m) for k, m in _layers(built).items()}
    dense = {k: dequantized_weight(m) for k, m in _layers(built).items()}
    held = held_tensor_bytes(built.model)
    _evaluate(built.model)
    _lora_grads(built.model)  # a training forward too (bnb int8 moves its row scales at the first forward)
    built.model.zero_grad(set_to_none=True)
    assert {k: stored_bytes(m) for k, m in _layers(built).items()} == before
    assert all(torch.equal(dequantized_weight(m), dense[k]) for k, m in _layers(built).items())
    assert held_tensor_bytes(built.model) == held
    assert verify(built.model, built.plan, 2.0) == {k: built.info[k] for k in
                                                     ("stored_bytes_by_bits", "stored_bytes_by_quantizer")}


def test_stored_bytes_of_a_repacked_nf4_layer_are_the_stored_formats(base, cache):
    """A layer bitsandbytes repacked anyway (a model from elsewhere, or prepared for scoring) still reports
    the stored format's bytes, and training refuses it instead of silently passing no gradient."""
    built = _build(base, cache, PLANS["nf4"])
    before = {k: stored_bytes(m) for k, m in _layers(built).items()}
    dense = {k: dequantized_weight(m) for k, m in _layers(built).items()}
    _repack_like_bnb(built.model)
    assert all(nf4_cpu_packed(m) for m in _layers(built).values())
    assert {k: stored_bytes(m) for k, m in _layers(built).items()} == before
    for k, m in _layers(built).items():  # bnb's inverse: absmax went through bf16 (0.4 % relative)
        torch.testing.assert_close(dequantized_weight(m), dense[k], rtol=0, atol=0.01 * dense[k].abs().max().item())
    assert all(nf4_cpu_packed(m) for m in _layers(built).values())  # measuring converts nothing back
    assert held_tensor_bytes(built.model) > 0
    with pytest.raises(ValueError, match=r"28 NF4 layer\(s\).*CPU inference layout.*build it again to train"):
        train_lora(built.model, built.tokenizer, _records(), Fidelity("t", steps=1), SETTINGS, seed=0)


@pytest.mark.parametrize("name", list(PLANS))
def test_saved_adapter_and_load_round_trip_unchanged_by_an_evaluation(base, cache, tmp_path, name):
    from safetensors.torch import load_file

    ids = torch.tensor([r["input_ids"] for r in _records(2, 16)])
    runs = {}
    for evaluated in (False, True):
        built = _build(base, cache, PLANS[name])
        if evaluated:
            _evaluate(built.model)
        train_lora(built.model, built.tokenizer, _records(), Fidelity("t", steps=2), SETTINGS, seed=0)
        logits = _evaluate(built.model)  # the score after training
        out = save_adapter(built, tmp_path / f"adapter-{evaluated}")
        loaded = load(base, out / "plan.json", out, cache_dir=cache)
        with torch.no_grad():
            round_trip = loaded.model(input_ids=ids).logits
        runs[evaluated] = (load_file(str(out / "adapter_model.safetensors")), logits, round_trip)
    (a_ref, logits_ref, rt_ref), (a_ev, logits_ev, rt_ev) = runs[False], runs[True]
    assert a_ref.keys() == a_ev.keys()
    for k in a_ref:
        assert torch.equal(a_ref[k], a_ev[k]), f"{k}: the saved adapter changed by an evaluation before training"
    assert torch.equal(logits_ref, logits_ev)
    torch.testing.assert_close(rt_ev, logits_ev, rtol=0, atol=1e-5)
    torch.testing.assert_close(rt_ref, rt_ev, rtol=0, atol=0)


def test_a_model_from_elsewhere_is_kept_out_of_the_repack_before_training(base, cache):
    """bnb's own default (the flag on where the CPU has AVX512-BF16) is switched off by train_lora, so the
    evaluations between its training runs cannot repack the model."""
    built = _build(base, cache, PLANS["nf4"])
    for _, m in bnb_nf4_layers(built.model):
        m.support_avx512bf16_for_cpu = True
    assert keep_training_layout(built.model) == 28
    assert not any(m.support_avx512bf16_for_cpu for _, m in bnb_nf4_layers(built.model))
    assert keep_training_layout(built.model) == 0


def test_scoring_only_models_use_bnb_packed_kernel_and_refuse_training(base, cache):
    from bitsandbytes.functional import has_avx512bf16

    if not has_avx512bf16():
        pytest.skip("bitsandbytes repacks NF4 weights (and has its packed CPU kernel) only on CPUs with "
                    "AVX512-BF16: the repack cannot occur here")
    safe = _build(base, cache, PLANS["nf4"])
    scoring = _build(base, cache, PLANS["nf4"])
    assert enable_cpu_inference_kernel(scoring.model) == 28
    torch.testing.assert_close(_evaluate(scoring.model), _evaluate(safe.model), rtol=0, atol=0.05)
    assert all(nf4_cpu_packed(m) for _, m in bnb_nf4_layers(scoring.model))  # the path is live on this CPU
    assert not any(nf4_cpu_packed(m) for _, m in bnb_nf4_layers(safe.model))
    # what the guard prevents: the packed layers pass no gradient to their inputs, so block 0's LoRA
    # gradients lose the signal that flows back through the later blocks
    want, got = _lora_grads(safe.model), _lora_grads(scoring.model)
    n = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight"
    assert (got[n] - want[n]).norm() > 0.5 * want[n].norm()
    with pytest.raises(ValueError, match="CPU inference layout"):
        train_lora(scoring.model, scoring.tokenizer, _records(), Fidelity("t", steps=1), SETTINGS, seed=0)
