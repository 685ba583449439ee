"""Shared runs (autoqra.runstore): a (plan, seed, settings) run is computed once and copied to every
method that returns the same plan; the copy is what recomputing would have written; concurrent
claims of one key compute it once; a failed run stores nothing."""

import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from autoqra.data import prepare_data  # noqa: E402
from autoqra.finetune import finetune, finetune_shared  # noqa: E402
from autoqra.io import read_json  # noqa: E402
from autoqra.models import prepare_model  # noqa: E402
from autoqra.plan import Plan  # noqa: E402
from autoqra.runstore import RunStore, retag_json, run_key  # noqa: E402
from autoqra.train import Fidelity, TrainSettings  # noqa: E402

MICRO = {"source": "micro", "id": None, "revision": None, "micro": None}
PLAN = Plan.mapped((2, 4, 8, 3), (4, 8, 16, 8), {2: "hqq", 3: "hqq", 4: "nf4", 8: "hqq"}, group_size=32)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/unit/conftest.py


def _produce_into(out: Path, text: str, calls: list | None = None):
    def produce():
        if calls is not None:
            calls.append(text)
        out.mkdir(parents=True, exist_ok=True)
        (out / "r.json").write_text(json.dumps({"method": text, "value": 1.5}))
        (out / "d").mkdir(exist_ok=True)
        (out / "d" / "manifest.json").write_text(json.dumps({"method": text}))
        (out / "d" / "w.bin").write_bytes(b"weights")
    return produce


def test_second_claim_copies_and_retags(tmp_path):
    store, calls = RunStore(tmp_path / "cache"), []
    ident = {"plan_hash": "abc", "seed": 0}
    a, b = tmp_path / "a", tmp_path / "b"
    first = store.run("finetune", ident, {"r.json": a / "r.json", "d": a / "d"}, _produce_into(a, "qlora", calls),
                      origin={"method": "qlora"}, retag=retag_json({"method": "qlora"}))
    second = store.run("finetune", ident, {"r.json": b / "r.json", "d": b / "d"}, _produce_into(b, "autoqra", calls),
                       origin={"method": "autoqra"}, retag=retag_json({"method": "autoqra"}))
    assert calls == ["qlora"] and not first["shared"] and second["shared"]
    assert second["origin"] == {"method": "qlora"} and second["key"] == first["key"] == run_key(ident)
    r = read_json(b / "r.json")
    assert r == {"method": "autoqra", "value": 1.5, "shared_from": {"method": "qlora"}}
    assert read_json(b / "d" / "manifest.json")["method"] == "autoqra"
    assert (b / "d" / "w.bin").read_bytes() == b"weights"
    assert read_json(a / "r.json")["method"] == "qlora"  # the original job's files are untouched
    # a different seed, or any other identity field, is a different run
    store.run("finetune", {**ident, "seed": 1}, {"r.json": tmp_path / "c" / "r.json"},
              _produce_into(tmp_path / "c", "lora", calls), origin={"method": "lora"})
    assert calls == ["qlora", "lora"]


def test_failed_run_stores_nothing(tmp_path):
    store = RunStore(tmp_path / "cache")

    def boom():
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        store.run("lm_eval", {"k": 1}, {"r.json": tmp_path / "r.json"}, boom, origin={"method": "x"})
    assert not store.entry("lm_eval", run_key({"k": 1})).exists()
    calls = []
    res = store.run("lm_eval", {"k": 1}, {"r.json": tmp_path / "a" / "r.json"}, _produce_into(tmp_path / "a", "y", calls),
                    origin={"method": "y"})
    assert calls == ["y"] and not res["shared"]


def _claim(root: str, out: str, name: str, log: str) -> None:
    def produce():
        with open(log, "a") as fh:
            fh.write(f"start {name}\n")
        time.sleep(1.0)
        _produce_into(Path(out), name)()
        with open(log, "a") as fh:
            fh.write(f"end {name}\n")

    RunStore(root).run("finetune", {"same": True}, {"r.json": Path(out) / "r.json"}, produce, origin={"method": name},
                        retag=retag_json({"method": name}))


def test_concurrent_claims_compute_once(tmp_path):
    log = tmp_path / "log.txt"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_claim, args=(str(tmp_path / "cache"), str(tmp_path / n), n, str(log)))
             for n in ("p", "q")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    lines = log.read_text().split()
    assert lines.count("start") == 1  # one process trained, the other waited and copied
    winner = lines[1]
    loser = "q" if winner == "p" else "p"
    assert read_json(tmp_path / loser / "r.json")["shared_from"] == {"method": winner}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("share")
    prepare_model(MICRO, root / "m", seed=0)
    prepare_data({"source": "synthetic", "n_train": 32, "n_val": 8, "n_test": 8}, root / "data", seed=0)
    return root


def _ft(fn, env, out, method, plan=PLAN, seed=3, cache="cache"):
    return fn(env / "m", env / "data", plan, cache_dir=env / cache, fidelity=Fidelity("final", steps=3),
              train=TrainSettings(lr=1e-2, batch_size=4, max_seq_len=64, progress=False), seed=seed,
              out_dir=env / out, method=method)


OTHER_META = PLAN.replace(meta={"method": "autoqra", "kind": "search"})  # same hash, its own meta


@pytest.fixture(scope="module")
def runs(env):
    """QLoRA's plan trained at seed 3, then AutoQRA returning the same plan, then QLoRA at seed 4."""
    return (_ft(finetune_shared, env, "qlora", "qlora_nf4"), _ft(finetune_shared, env, "autoqra", "autoqra", plan=OTHER_META),
            _ft(finetune_shared, env, "qlora_s4", "qlora_nf4", seed=4))


def test_shared_finetune_equals_recomputation(env, runs):
    """QLoRA's run copied to AutoQRA (same plan, seed) is byte for byte what training AutoQRA's plan
    again writes: sharing changes no number."""
    first, second, third = runs
    other_meta = OTHER_META
    assert not first["share"]["shared"] and second["share"]["shared"]
    assert second["shared_from"]["method"] == "qlora_nf4" and second["method"] == "autoqra"
    assert second["final_loss"] == first["final_loss"] and second["loss_history"] == first["loss_history"]
    assert second["plan"]["meta"]["method"] == "autoqra"
    assert Plan.load(env / "autoqra/adapter/plan.json").meta["method"] == "autoqra"
    assert read_json(env / "autoqra/adapter/manifest.json")["method"] == "autoqra"
    # recompute without the store, in a fresh cache: identical trained weights and losses
    again = _ft(finetune, env, "recomputed", "autoqra", plan=other_meta, cache="cache2")
    assert again["loss_history"] == first["loss_history"]
    for f in ("adapter_model.safetensors", "adapter_config.json"):
        assert (env / "recomputed/adapter" / f).read_bytes() == (env / "autoqra/adapter" / f).read_bytes()
    # another seed is another run
    assert not third["share"]["shared"] and third["loss_history"] != first["loss_history"]


def test_lm_eval_key_follows_the_trained_weights(env, runs):
    """lm-eval runs share a key exactly when base, plan, adapter weights, settings, documents and seed agree."""
    from autoqra.lmeval import lm_eval_identity

    root = Path(__file__).resolve().parents[2]
    cfg = {"tasks": ["synth_mc"], "limit": 4, "batch_size": 4, "num_fewshot": None, "max_length": None, "dense": True}

    def key(run, seed=0, **over):
        return run_key(lm_eval_identity(env / "m", PLAN, env / run / "adapter", {**cfg, **over},
                                        task_dir=root / "workflow/resources/lm_eval_tasks", data_dir=env / "data",
                                        seed=seed))

    assert key("qlora") == key("autoqra")  # the copied adapter: same weights
    assert key("qlora") != key("qlora_s4")  # trained on another seed: other weights
    assert key("qlora") != key("qlora", seed=1) and key("qlora") != key("qlora", dense=False)


def test_study_counts_copied_runs(tmp_path):
    from autoqra.study import shared_run_counts

    for m, shared in (("qlora_nf4", False), ("autoqra", True), ("oracle", True)):
        d = tmp_path / "results/finetune/smol" / m / "s0"
        d.mkdir(parents=True)
        (d / "train.json").write_text(json.dumps({"method": m, **({"shared_from": {"method": "qlora_nf4"}} if shared else {})}))
    (tmp_path / "results/lm_eval/smol/autoqra").mkdir(parents=True)
    (tmp_path / "results/lm_eval/smol/autoqra/s0.json").write_text(json.dumps({"method": "autoqra"}))
    assert shared_run_counts(tmp_path) == {"finetune": 3, "finetune_copied": 2, "lm_eval": 1, "lm_eval_copied": 0}


def test_study_sums_job_seconds(tmp_path):
    from autoqra.study import job_seconds

    head = "s\th:m:s\tmax_rss\tcpu_time\n"
    for name, (s, cpu) in {"a/x.tsv": (10.0, 4.0), "b/c/y.tsv": (5.5, 5.0)}.items():
        f = tmp_path / "results/benchmarks" / name
        f.parent.mkdir(parents=True)
        f.write_text(head + f"{s}\t0:00:10\t100\t{cpu}\n")
    assert job_seconds(tmp_path) == {"jobs": 2, "wall_seconds": 15.5, "cpu_seconds": 9.0}
