"""General language ability: the general-text source and split, its loss, the general_text lm-eval
task on the micro model (a real lm-eval run) and the general-text term of the search score."""

import math
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from autoqra.data import prepare_data  # noqa: E402
from autoqra.data.general_text import general_parts, load_general, paragraphs_of, part_of  # noqa: E402
from autoqra.evaluate import EvalSettings, Evaluator  # noqa: E402
from autoqra.models import prepare_model  # noqa: E402
from autoqra.plan import Plan  # noqa: E402
from autoqra.taskmetrics import corpus_value  # noqa: E402
from autoqra.train import Fidelity, TrainSettings  # noqa: E402

MICRO = {"source": "micro", "id": None, "revision": None, "micro": None}
TASKS = os.path.join(os.path.dirname(__file__), "..", "..", "workflow", "resources", "lm_eval_tasks")

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/unit/conftest.py


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("general")
    prepare_model(MICRO, root / "m", seed=0)
    prepare_data({"source": "synthetic", "n_train": 64, "n_val": 16, "n_test": 8,
                  "general_text": {"source": "python_docs", "heldout_fraction": 0.5}}, root / "data", seed=0)
    return root


def test_python_docs_prose_split_is_disjoint_and_stable(env):
    parts, origin = general_parts({"source": "python_docs", "heldout_fraction": 0.5})
    search, heldout = ({r["text"] for r in parts[p]} for p in ("search", "heldout"))
    assert not search & heldout and len(search) > 50 and len(heldout) > 50
    assert origin["module"] == "pydoc_data.topics" and origin["paragraphs"] == len(search) + len(heldout)
    assert all(len(t) >= 200 and t.endswith(".") and "\n" not in t for t in search | heldout)
    assert [r["text"] for r in parts["heldout"]] == load_general(env / "data" / "general_heldout.jsonl")
    # a paragraph's part depends on its text only
    assert part_of(next(iter(heldout)), 0.5) == "heldout" and part_of(next(iter(search)), 0.5) == "search"
    assert paragraphs_of("    code()\n\nshort.\n\n" + "A real sentence of prose. " * 10) == ["A real sentence of prose. " * 9
                                                                                       + "A real sentence of prose."]


def test_general_text_task_on_the_micro_model(env):
    """lm-eval's rolling log-likelihood over the held-out paragraphs, per document: the corpus
    metrics re-aggregated from the per-document rows equal lm-eval's own."""
    import autoqra
    from autoqra.finetune import finetune
    from autoqra.lmeval import prepare_tasks, run_lm_eval, tidy_results

    plan = Plan.uniform(4, 4, 8, group_size=32)
    finetune(env / "m", env / "data", plan, cache_dir=env / "cache", fidelity=Fidelity("final", steps=2),
             train=TrainSettings(lr=1e-2, batch_size=4, max_seq_len=96, progress=False), seed=0,
             out_dir=env / "run", method="hqq4")
    built = autoqra.load(env / "m", plan, env / "run" / "adapter", cache_dir=env / "cache")
    include = prepare_tasks(TASKS, env / "data", env / "work")
    out = run_lm_eval(built.model, built.tokenizer, ["general_text"], include_path=include, limit=6, seed=0)
    metrics = {r["metric"]: r["value"] for r in tidy_results(out)}
    assert set(metrics) == {"word_perplexity", "byte_perplexity", "bits_per_byte"}
    per = {}
    for r in out["docs"]:
        per.setdefault(r["metric"], []).append(r["value"])
    assert set(per) == {"loglikelihood", "words", "bytes", "tokens"} and len(per["loglikelihood"]) == 6
    per = {k: np.array(v) for k, v in per.items()}
    for m in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
        assert corpus_value(m, per) == pytest.approx(metrics[m], rel=1e-6)
    nats = corpus_value("nats_per_token", per)
    assert 3.0 < nats < 2 * math.log(512)  # a random 512-token model: about ln(512) = 6.2 nats/token


def _evaluator(env, weight, cache):
    return Evaluator(env / "m", env / "data", env / cache, fidelities={"hf": Fidelity("hf", steps=3)},
                     train=TrainSettings(lr=1e-2, batch_size=4, max_seq_len=96, progress=False),
                     eval=EvalSettings(batch_size=16, max_seq_len=96, metric="neg_loss", general_weight=weight,
                                       general_examples=6, general_max_len=64))


def test_general_text_term_changes_the_ranking_as_intended(env):
    """score = task score − λ·general loss: with λ = 0 plans rank by the task score alone; a λ
    above the break-even (Δ task score / Δ general loss) ranks the plan that keeps more general
    ability first; the records and cache keys carry the term."""
    plans = [Plan.uniform(4, 8, 8, group_size=32), Plan.uniform(4, 2, 8, group_size=32),
             Plan((2, 8, 2, 8), (8, 8, 8, 8), group_size=32)]
    plain = _evaluator(env, 0.0, "c0")
    recs0 = [plain.evaluate(p, "hf", 0) for p in plans]
    assert all(r["general_loss"] is None and r["score"] == r["task_score"] for r in recs0)
    assert "general" not in plain.settings_key(plain.fidelity("hf"))["eval"]  # old keys unchanged
    probe = _evaluator(env, 1e-9, "c1")
    recs = [probe.evaluate(p, "hf", 0) for p in plans]
    ts = np.array([r["task_score"] for r in recs])
    gl = np.array([r["general_loss"] for r in recs])
    assert np.allclose(ts, [r["score"] for r in recs0])  # same training, same task score
    # the pair whose task-score and general-loss orders disagree the most
    i, j = max(((a, b) for a in range(3) for b in range(3) if ts[a] > ts[b]), key=lambda ab: gl[ab[0]] - gl[ab[1]])
    assert gl[i] > gl[j], "expected a plan that wins on the task but loses general ability"
    lam = 2 * (ts[i] - ts[j]) / (gl[i] - gl[j])
    weighted = _evaluator(env, lam, "c2")
    key = weighted.settings_key(weighted.fidelity("hf"))
    assert key["eval"]["general"]["general_weight"] == lam
    ri, rj = weighted.evaluate(plans[i], "hf", 0), weighted.evaluate(plans[j], "hf", 0)
    assert ri["score"] == pytest.approx(ri["task_score"] - lam * ri["general_loss"])
    assert ri["task_score"] > rj["task_score"] and ri["score"] < rj["score"]  # the ranking flips
