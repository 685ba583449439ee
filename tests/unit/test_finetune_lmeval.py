"""Final fine-tuning (adapter + cost record), autoqra.load of the adapter and the lm-eval wrapper on
the micro model with the bundled offline tasks."""

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import autoqra  # noqa: E402
from autoqra.data import prepare_data  # noqa: E402
from autoqra.errors import ConfigError, PlanError  # noqa: E402
from autoqra.finetune import finetune  # noqa: E402
from autoqra.lmeval import available_local_tasks, prepare_tasks, run_lm_eval, tidy_results  # noqa: E402
from autoqra.models import prepare_model  # noqa: E402
from autoqra.plan import Plan  # noqa: E402
from autoqra.train import Fidelity, TrainSettings  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TASKS = ROOT / "workflow" / "resources" / "lm_eval_tasks"
MICRO = {"source": "micro", "id": None, "revision": None, "micro": None}
# mixed quantizers: HQQ at 2/3 bits, NF4 at 4, int8 at 8
PLAN = Plan.mapped((2, 4, 8, 3), (4, 8, 16, 8), {2: "hqq", 3: "hqq", 4: "nf4", 8: "int8"}, group_size=32)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/unit/conftest.py


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    prepare_model(MICRO, root / "m", seed=0)
    prepare_data({"source": "synthetic", "n_train": 64, "n_val": 16, "n_test": 12}, root / "data", seed=0)
    rec = finetune(root / "m", root / "data", PLAN, cache_dir=root / "cache", fidelity=Fidelity("final", steps=4),
                   train=TrainSettings(lr=1e-2, batch_size=4, max_seq_len=96, progress=False, lr_schedule="linear",
                                       warmup_steps=1), seed=3,
                   out_dir=root / "run", method="mixed")
    return root, rec


def test_finetune_record_and_adapter(tuned):
    root, rec = tuned
    assert (root / "run/adapter/adapter_model.safetensors").is_file()
    assert Plan.load(root / "run/adapter/plan.json").hash == PLAN.hash
    stored = json.loads((root / "run/train.json").read_text())
    assert stored["plan_hash"] == PLAN.hash and stored["steps"] == 4 and stored["seed"] == 3
    assert stored["avg_bits"] == pytest.approx(17 / 4) and stored["avg_rank"] == 9
    assert stored["plan"]["quantizers"] == ["hqq", "nf4", "int8", "hqq"] and stored["quantizers"] == "hqq+nf4+int8"
    # Packed weights + metadata measured from the model agree with the memory model up to the LoRA
    # tensors, which train in float32 on CPU (4 bytes) where the model charges 16 bit.
    m = stored["memory_measured"]
    lora_params = stored["trainable_params"]
    assert m["lora"] == 4 * lora_params
    assert m["weights"] + m["quant_meta"] + 2 * lora_params == pytest.approx(stored["memory_analytic_bytes"], rel=0.01)
    assert stored["manifest"]["stage"] == "finetune" and stored["peak_train_bytes"] > 0
    # the tables' "bits/weight (stored)": the memory model's, equal to what the built layers store
    from autoqra.memory import ModelShape

    shape = ModelShape.from_path(root / "m")
    measured_bpw = 8 * (m["weights"] + m["quant_meta"]) / (shape.n_blocks * shape.block_weight_params)
    assert stored["bits_per_weight_stored"] == pytest.approx(measured_bpw, rel=1e-9)
    assert stored["bits_per_weight_stored"] > stored["avg_bits"]  # metadata counted (17/4 nominal)
    # the training peak: measured (held tensors + saved activations) vs predicted, within 15 %
    peak, pred = stored["peak_train_measured"], stored["peak_train_predicted"]
    assert stored["peak_train_bytes"] == peak["held_tensors"] + peak["saved_activations"]
    assert peak["saved_activations"] > 0 and pred["lora_grads"] == pred["lora"] == 4 * lora_params
    assert pred["adamw_state"] == 8 * lora_params
    assert stored["peak_train_predicted_bytes"] == pytest.approx(stored["peak_train_bytes"], rel=0.15)
    # the learning-rate schedule: one warm-up step, then linear decay to zero
    assert stored["lr_schedule"] == "linear" and stored["warmup_steps"] == 1
    assert stored["lr_history"] == pytest.approx([5e-3, 1e-2, 1e-2 * 2 / 3, 1e-2 / 3])


def test_load_rebuilds_the_trained_model(tuned):
    root, _ = tuned
    built = autoqra.load(root / "m", PLAN, root / "run/adapter", cache_dir=root / "cache")
    lora_b = [p for n, p in built.model.named_parameters() if "lora_B" in n]
    assert lora_b and any(float(p.abs().sum()) > 0 for p in lora_b)  # trained, not the zero init
    other = Plan((4, 4, 4, 4), (4, 8, 16, 8), group_size=32)
    with pytest.raises(PlanError, match="was trained for plan"):
        autoqra.load(root / "m", other, root / "run/adapter", cache_dir=root / "cache")


def test_lm_eval_on_offline_tasks(tuned):
    root, _ = tuned
    assert set(available_local_tasks(TASKS)) >= {"synth_mc", "synth_gen"}
    built = autoqra.load(root / "m", PLAN, root / "run/adapter", cache_dir=root / "cache")
    include = prepare_tasks(TASKS, root / "data", root / "work")
    first = json.loads((root / "work/data/test.jsonl").read_text().splitlines()[0])
    assert first["prompt"].endswith("### Response:\n")
    out = run_lm_eval(built.model, built.tokenizer, ["synth_mc", "synth_gen"], include_path=include, limit=6,
                      batch_size=8, seed=0, max_length=64)
    assert out["max_length"] == 64  # what HFLM works in (lm_eval.max_length), read back from it
    assert out["versions"] == {"synth_mc": 1.0, "synth_gen": 1.0}
    assert out["n-samples"]["synth_mc"]["effective"] == 6
    rows = {(r["task"], r["metric"]): r["value"] for r in tidy_results(out)}
    assert set(rows) == {("synth_mc", "acc"), ("synth_mc", "acc_norm"), ("synth_gen", "exact_match[first_line]")}
    assert all(0.0 <= v <= 1.0 for v in rows.values())
    with pytest.raises(ConfigError, match="unknown task"):
        run_lm_eval(built.model, built.tokenizer, ["no_such_task"], include_path=include, limit=2)


def test_evaluate_adapter_result_does_not_name_its_scratch_directory(tuned):
    """A shared run's result is copied to every method with the same plan: it must not depend on which
    method's job (scratch directory) computed it."""
    from autoqra.lmeval import WORK_DIR, evaluate_adapter

    root, rec = tuned
    plan_path = root / "plan.json"
    PLAN.save(plan_path)
    cfg = {"tasks": ["synth_mc"], "limit": 3, "batch_size": 8, "num_fewshot": None, "max_length": 64,
           "dense": True, "shared_context": True}
    outs = [evaluate_adapter(root / "m", plan_path, root / "run/adapter", cfg, task_dir=TASKS, data_dir=root / "data",
                             work_dir=root / name, cache_dir=root / "cache", seed=0) for name in ("a.work", "b.work")]
    (a, docs_a), (b, docs_b) = outs
    a.pop("request_seconds"), b.pop("request_seconds")
    assert a == b and docs_a == docs_b
    text = json.dumps(a)
    assert WORK_DIR in text and str(root / "a.work") not in text
