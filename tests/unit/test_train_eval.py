"""LoRA training loop, validation scoring and the cached plan evaluator, on the micro model."""

import json
import math
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from autoqra import evaluate as evaluate_mod  # noqa: E402
from autoqra.data import collate, load_split, prepare_data, tokenize_example  # noqa: E402
from autoqra.errors import ConfigError, PlanError  # noqa: E402
from autoqra.evaluate import EvalSettings, Evaluator, injected_failure, score_model  # noqa: E402
from autoqra.memory import MemoryModel, ModelShape  # noqa: E402
from autoqra.models import load_model, prepare_model  # noqa: E402
from autoqra.plan import PROJECTIONS, Plan  # noqa: E402
from autoqra.train import (  # noqa: E402
    Fidelity,
    TrainingFailed,
    TrainSettings,
    held_tensor_bytes,
    response_loss_sum,
    train_lora,
)

MICRO = {"source": "micro", "id": None, "revision": None, "micro": None}
FAST = TrainSettings(lr=1e-2, batch_size=4, max_seq_len=96, progress=False)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/unit/conftest.py


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("traineval")
    prepare_model(MICRO, root / "m", seed=0)
    prepare_data({"source": "synthetic", "n_train": 64, "n_val": 32, "n_test": 8}, root / "data", seed=0)
    return {"root": root, "model": root / "m", "data": root / "data",
            "train": load_split(root / "data", "train"), "val": load_split(root / "data", "validation")}


def lora16(env):
    """A fresh 16-bit LoRA model (rank 8, no dropout) on the micro base."""
    from peft import LoraConfig, get_peft_model

    model, tok = load_model(env["model"])
    torch.manual_seed(0)
    cfg = LoraConfig(r=8, lora_alpha=16, target_modules=list(PROJECTIONS), lora_dropout=0.0)
    return get_peft_model(model, cfg), tok


# -- Fidelity ---------------------------------------------------------------------------------
def test_fidelity_needs_exactly_one_budget():
    with pytest.raises(ValueError, match="not both"):
        Fidelity("x", steps=3, data_fraction=0.1, epochs=1.0)
    with pytest.raises(ValueError, match="'data_fraction' is required"):
        Fidelity("x")
    with pytest.raises(ValueError, match="'epochs' is required"):
        Fidelity("x", data_fraction=0.1)
    with pytest.raises(ValueError, match="'data_fraction' is required"):
        Fidelity("x", epochs=1.0)
    with pytest.raises(ValueError, match="'steps' must be a positive integer"):
        Fidelity("x", steps=0)
    with pytest.raises(ValueError, match="'data_fraction' must be in"):
        Fidelity("x", data_fraction=1.5, epochs=1.0)
    with pytest.raises(ValueError, match="unknown key"):
        Fidelity.from_dict("x", {"step": 3})


def test_fidelity_num_steps_and_key():
    s = TrainSettings(batch_size=4, grad_accum=1)
    assert Fidelity("lf", data_fraction=0.05, epochs=0.1).num_steps(1000, s) == 2  # ceil(5 / 4)
    assert Fidelity("hf", data_fraction=0.2, epochs=0.5).num_steps(1000, s) == 25  # 100 / 4
    assert Fidelity("hf", data_fraction=0.5, epochs=2.0).num_steps(10, TrainSettings(batch_size=4,
                                                                                       grad_accum=2)) == 2
    assert Fidelity("tiny", data_fraction=0.01, epochs=0.01).num_steps(10, s) == 1  # at least one step
    assert Fidelity("s", steps=7).num_steps(10_000, s) == 7
    assert Fidelity("lf", data_fraction=0.05, epochs=0.1).subset_size(1000) == 50
    a, b = Fidelity("a", data_fraction=0.05, epochs=0.1), Fidelity("b", data_fraction=0.05, epochs=0.1)
    assert a.key() == b.key() == {"steps": None, "data_fraction": 0.05, "epochs": 0.1}
    assert json.dumps(a.key(), sort_keys=True) == json.dumps(Fidelity.from_dict("c", a.key()).key(), sort_keys=True)


# -- training ----------------------------------------------------------------------------------
def test_response_loss_matches_the_models_own_loss(env):
    model, tok = lora16(env)
    model.eval()
    # mixed prompt lengths, so the trimmed logits window starts at the shortest prompt
    batch = collate([tokenize_example(tok, r, 96) for r in env["train"][:6]], tok.pad_token_id)
    with torch.no_grad():
        ours, per_seq = response_loss_sum(model, batch)
        ref = model(**batch).loss
    n = int((batch["labels"][:, 1:] != -100).sum())
    assert float(ours) / n == pytest.approx(float(ref), rel=1e-5)
    assert per_seq.shape == (6,) and float(per_seq.sum()) == pytest.approx(float(ours))


@pytest.fixture(scope="module")
def trained(env):
    """A 16-bit LoRA model scored before and after 30 steps at lr 1e-2 (shared by two tests)."""
    model, tok = lora16(env)
    model.eval()
    before = score_model(model, tok, env["val"], EvalSettings(batch_size=8, max_seq_len=96))
    res = train_lora(model, tok, env["train"], Fidelity("t", steps=30), FAST, seed=0)
    return model, tok, before, res


def test_loss_goes_down_and_run_is_measured(trained):
    model, tok, _, res = trained
    h = res.loss_history
    assert res.steps == 30 and len(h) == 30 and all(math.isfinite(x) for x in h)
    assert sum(h[-5:]) / 5 < sum(h[:5]) / 5 - 0.2, h
    assert res.final_loss == pytest.approx(sum(h[-3:]) / 3)  # last 10% of 30 steps
    assert res.tokens > 30 * 4 * 10 and res.tokens_per_s > 0 and res.train_seconds > 0
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    adam = 2 * res.trainable_params * 4
    assert res.peak_memory_bytes >= params + adam  # model tensors + grads + Adam moments
    assert res.device == "cpu" and not model.training  # the caller's eval mode is restored


def test_training_is_deterministic_for_a_seed(env):
    runs = []
    for seed in (1, 1, 2):
        model, tok = lora16(env)
        runs.append(train_lora(model, tok, env["train"], Fidelity("t", steps=6), FAST, seed=seed).loss_history)
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_data_fraction_draws_a_seeded_subset(env):
    model, tok = lora16(env)
    res = train_lora(model, tok, env["train"], Fidelity("f", data_fraction=0.25, epochs=1.0), FAST, seed=0)
    assert res.n_examples == 16 and res.steps == 4  # 64·0.25 = 16 examples, 16 / batch 4


def test_gradient_checkpointing_matches_plain_training(env):
    hist = []
    for gc in (False, True):
        model, tok = lora16(env)
        s = TrainSettings(lr=1e-2, max_seq_len=96, progress=False, grad_checkpointing=gc)
        hist.append(train_lora(model, tok, env["train"], Fidelity("t", steps=3), s, seed=0).loss_history)
    assert hist[0] == pytest.approx(hist[1], rel=1e-4)


@pytest.mark.parametrize("inject, reason", [("nan", "nan_loss at step 1"), ("oom", "cuda_oom: injected"),
                                            ("diverge", "diverged: smoothed loss")])
def test_injected_failures_raise_training_failed(env, inject, reason):
    model, tok = lora16(env)
    s = TrainSettings(max_seq_len=96, progress=False, inject_failure=inject)
    with pytest.raises(TrainingFailed) as exc:
        train_lora(model, tok, env["train"], Fidelity("t", steps=7), s, seed=0)
    assert exc.value.reason.startswith(reason)
    assert isinstance(exc.value, RuntimeError)


def test_injected_divergence_trips_the_smoothed_guard_early(env):
    model, tok = lora16(env)
    s = TrainSettings(max_seq_len=96, progress=False, inject_failure="diverge")
    with pytest.raises(TrainingFailed, match=r"diverged: smoothed loss .* > 3 × its minimum .* at step 2$"):
        train_lora(model, tok, env["train"], Fidelity("t", steps=2), s, seed=0)  # an LF run is short


def test_healthy_noisy_run_is_not_flagged_and_the_schedule_is_recorded(env):
    """40 steps of batch 2 at a high lr: the per-batch loss is noisy, the smoothed guard stays quiet."""
    model, tok = lora16(env)
    s = TrainSettings(lr=1e-2, batch_size=2, max_seq_len=96, progress=False, lr_schedule="linear",
                      warmup_ratio=0.1)
    res = train_lora(model, tok, env["train"], Fidelity("t", steps=40), s, seed=0)
    h = res.loss_history
    assert len(h) == 40 and max(h) / min(h) > 1.05  # noisy, yet not flagged
    lrs = res.extra["lr_history"]
    assert res.extra["lr_schedule"] == "linear" and res.extra["warmup_steps"] == 4
    assert lrs[:5] == pytest.approx([1e-2 * k / 5 for k in (1, 2, 3, 4)] + [1e-2])  # warm-up, then peak
    assert lrs[-1] == pytest.approx(1e-2 / 36) and all(a >= b for a, b in zip(lrs[4:-1], lrs[5:], strict=True))


# -- scoring -----------------------------------------------------------------------------------
def test_score_model_and_training_lowers_validation_loss(env, trained):
    model, tok, before, _ = trained
    assert 0 <= before["accuracy"] <= 1 and math.isfinite(before["loss"])
    assert before["n_examples"] == 32 and before["score"] == before["accuracy"]
    model.train()
    after = score_model(model, tok, env["val"], EvalSettings(max_seq_len=96, metric="neg_loss"))
    assert model.training  # mode restored
    assert after["loss"] < before["loss"] - 0.2
    assert after["score"] == -after["loss"]
    no_choices = [{k: v for k, v in r.items() if k not in ("choices", "label")} for r in env["val"]]
    plain = score_model(model, tok, no_choices, EvalSettings(max_seq_len=96, max_examples=10))
    assert plain["accuracy"] is None and plain["score"] == -plain["loss"] and plain["n_examples"] == 10


def test_held_tensor_bytes_counts_hqq_metadata(env, tmp_path):
    from autoqra.quant import build

    built = build(env["model"], Plan.uniform(4, 4, 8, group_size=32), cache_dir=tmp_path)
    held = held_tensor_bytes(built.model)
    mm = MemoryModel(ModelShape.from_path(env["model"]), "hqq", 32)
    plan = Plan.uniform(4, 4, 8, group_size=32)
    # held tensors: fixed part and LoRA in fp32 (2× the 16-bit charge), packed weights + fp16 meta as charged
    bd = mm.breakdown(plan)
    expected = 2 * bd["fixed_bytes"] + bd["plan_parts"]["weights"] + bd["plan_parts"]["quant_meta"] \
        + 2 * bd["plan_parts"]["lora"]
    assert held == pytest.approx(expected, rel=0.02)


# -- evaluator ---------------------------------------------------------------------------------
FIDS = {"lf": Fidelity("lf", steps=2), "hf": Fidelity("hf", data_fraction=0.125, epochs=1.0)}
PLAN = Plan((2, 3, 4, 8), (4, 8, 16, 8), group_size=32)


def make_evaluator(env, evaluator_kw=None, **train):
    ts = TrainSettings(**{"lr": 1e-3, "batch_size": 4, "max_seq_len": 96, "progress": False, **train})
    return Evaluator(env["model"], env["data"], env["root"] / "cache", fidelities=FIDS, train=ts,
                     eval=EvalSettings(max_seq_len=96, max_examples=12), lora_dropout=0.05, **(evaluator_kw or {}))


def test_evaluator_record_and_cache(env, monkeypatch):
    ev = make_evaluator(env)
    rec = ev.evaluate(PLAN, "lf", seed=0)
    assert rec["status"] == "ok" and rec["reason"] is None and rec["cached"] is False
    assert rec["plan_hash"] == PLAN.hash and rec["plan"] == PLAN.to_dict()
    assert rec["fidelity"] == "lf" and rec["fidelity_spec"] == FIDS["lf"].key() and rec["seed"] == 0
    manifest = json.loads((env["model"] / "manifest.json").read_text())
    assert len(rec["base_model"]) == 64 and manifest["weights_sha256"]
    assert 0 <= rec["score"] <= 1 and rec["score"] == rec["accuracy"] and math.isfinite(rec["loss"])
    mm = MemoryModel(ModelShape.from_path(env["model"]), "hqq", 32)
    assert rec["memory_bytes"] == mm.plan_bytes(PLAN)
    assert rec["total_memory_bytes"] == mm.plan_bytes(PLAN) + mm.fixed_bytes
    assert rec["steps"] == 2 and len(rec["loss_history"]) == 2
    assert rec["trainable_params"] == 1216 * sum(PLAN.ranks)
    for k in ("train_loss", "peak_memory_bytes", "train_seconds", "eval_seconds", "build_seconds", "tokens_per_s"):
        assert rec[k] is not None and rec[k] > 0, k
    path = ev.record_path(PLAN, "lf", 0)
    assert path.parent == env["root"] / "cache" / "evals" / rec["base_model"][:12] / "lf"
    assert path.name.startswith(f"{PLAN.hash}-s0-") and json.loads(path.read_text())["score"] == rec["score"]

    def no_training(*a, **k):
        raise AssertionError("a cached evaluation must not train")
    monkeypatch.setattr(evaluate_mod, "train_lora", no_training)
    again = ev.evaluate(PLAN, "lf", seed=0)
    assert again["cached"] is True and again["score"] == rec["score"] and ev.n_trained == 1
    fresh = make_evaluator(env)  # a new process reads the same cache without loading the model
    assert fresh.evaluate(PLAN, "lf", seed=0)["score"] == rec["score"] and fresh._base is None


def test_evaluator_runs_fractions_seeds_and_many(env):
    ev = make_evaluator(env)
    ev.evaluate(PLAN, "hf", seed=1)
    recs = ev.evaluate_many([PLAN, Plan.uniform(4, 4, 8, group_size=32)], "hf", seed=1)
    assert [(r["status"], r["cached"]) for r in recs] == [("ok", True), ("ok", False)] and ev.n_trained == 2
    assert recs[1]["steps"] == 2  # 64 · 0.125 = 8 examples, batch 4
    assert ev.record_path(PLAN, "hf", 1) != ev.record_path(PLAN, "hf", 2) != ev.record_path(PLAN, "lf", 1)
    other = make_evaluator(env, lr=2e-3)  # different training settings never share a record
    assert other.record_path(PLAN, "hf", 1) != ev.record_path(PLAN, "hf", 1)


@pytest.mark.parametrize("inject", ["nan", "oom"])
def test_evaluator_records_failures(env, inject):
    ev = make_evaluator(env, inject_failure=inject)
    rec = ev.evaluate(PLAN, "lf", seed=0)
    assert rec["status"] == "failed" and rec["score"] is None
    assert rec["reason"].startswith({"nan": "nan_loss at step 1", "oom": "cuda_oom"}[inject])
    again = ev.evaluate(PLAN, "lf", seed=0)
    # a NaN is a property of the plan (cached); an OOM depends on the machine (retried)
    assert again["cached"] is (inject == "nan") and again["status"] == "failed"


def test_injection_hits_a_fixed_fraction_of_plans(env):
    """evaluation.inject_failure: the plans hit are a function of the plan hash (the same in every
    run), roughly the fraction asked for; records of an injected evaluator never share a key with
    ordinary ones."""
    spec = {"kind": "nan", "fraction": 0.3}
    hashes = [Plan.uniform(4, b, r, group_size=32).hash for b in (2, 3, 4, 8) for r in (4, 8, 16)]
    hashes += [f"{i:016x}" for i in range(400)]
    hit = [injected_failure(h, spec) for h in hashes]
    assert hit == [injected_failure(h, spec) for h in hashes] and set(hit) == {"nan", None}
    assert 0.2 < hit.count("nan") / len(hit) < 0.4
    assert all(injected_failure(h, {**spec, "fraction": 1.0}) == "nan" for h in hashes)
    assert not any(injected_failure(h, {**spec, "fraction": 0.0}) for h in hashes)
    plain = make_evaluator(env)
    injected = make_evaluator(env, evaluator_kw=dict(inject_failure={"kind": "nan", "fraction": 1.0}))
    assert plain.record_path(PLAN, "lf", 0) != injected.record_path(PLAN, "lf", 0)
    rec = injected.evaluate(PLAN, "lf", seed=0)
    assert rec["status"] == "failed" and rec["reason"] == "nan_loss at step 1"
    with pytest.raises(ConfigError, match="evaluation.inject_failure"):
        make_evaluator(env, evaluator_kw=dict(inject_failure={"kind": "segfault"}))


def test_evaluator_user_errors_raise_before_work(env):
    ev = make_evaluator(env)
    with pytest.raises(PlanError, match="plan has 3 blocks, the model has 4"):
        ev.evaluate(Plan.uniform(3, 4, 8), "lf", seed=0)
    with pytest.raises(PlanError, match="quantizer 'none' cannot store 4-bit"):
        ev.evaluate(Plan.uniform(4, 4, 8, "none"), "lf", seed=0)
    with pytest.raises(ConfigError, match="unknown fidelity 'mf'"):
        ev.evaluate(PLAN, "mf", seed=0)
    with pytest.raises(PlanError):
        ev.evaluate_many([PLAN, Plan.uniform(5, 4, 8)], "lf", seed=3)
    assert ev.n_trained == 0 and ev._base is None


def test_quant_error_is_the_loss_increase_before_finetuning(env, tmp_path):
    ev = Evaluator(env["model"], env["data"], tmp_path, fidelities={"lf": Fidelity("lf", steps=1)},
                   train=FAST, eval=EvalSettings(batch_size=8, max_seq_len=96, max_examples=8, metric="neg_loss"))
    two = ev.quant_error(Plan.uniform(4, 2, 8, group_size=32))
    eight = ev.quant_error(Plan.uniform(4, 8, 8, group_size=32))
    assert two["base_loss"] == eight["base_loss"]
    assert two["quant_error"] > eight["quant_error"] >= -1e-3  # 8-bit is nearly lossless, 2-bit is not
    assert two["pre_loss"] == pytest.approx(two["base_loss"] + two["quant_error"])
    assert ev.n_trained == 0  # nothing trained; the next call is served from the cache
    again = ev.quant_error(Plan.uniform(4, 2, 8, group_size=32))
    assert again == two and len(list((tmp_path / "evals").rglob("pre/*.json"))) == 3


def test_evaluation_cache_key_carries_the_library_code_version(env, monkeypatch):
    plan = PLAN
    now = make_evaluator(env)
    assert now.settings_key(now.fidelity("lf"))["code"] == now.code and len(now.code) == 16
    monkeypatch.setattr(evaluate_mod, "code_sha", lambda *parts: "0" * 16)  # e.g. train.py edited
    edited = make_evaluator(env)
    assert edited.record_path(plan, "lf", 0) != now.record_path(plan, "lf", 0)
    assert edited.record_path(plan, "lf", 0).parent == now.record_path(plan, "lf", 0).parent
