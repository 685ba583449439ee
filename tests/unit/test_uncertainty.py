"""The paired bootstrap on hand-made per-document results (no torch): a real difference is
resolved, no difference is not, seeds widen the interval, ratio metrics re-aggregate like lm-eval."""

import math

import numpy as np
import pandas as pd
import pytest

from autoqra.report.uncertainty import bootstrap_model, paired_difference, task_data
from autoqra.taskmetrics import corpus_value, main_metric


def mc_rows(method, seed, correct, task="t_mc", metric="acc_norm", model="m"):
    return [{"model": model, "method": method, "seed": seed, "task": task, "doc_id": i, "metric": metric,
             "value": float(c)} for i, c in enumerate(correct)]


def bernoulli(p, n, rng):
    return (rng.random(n) < p).astype(int)


def test_known_difference_is_resolved_and_close_to_truth():
    rng = np.random.default_rng(1)
    rows = []
    for s in range(3):
        rows += mc_rows("auto", s, bernoulli(0.5, 400, rng)) + mc_rows("better", s, bernoulli(0.7, 400, rng))
    unc = bootstrap_model(pd.DataFrame(rows), "auto", n_boot=1000).set_index(["method", "task"])
    row = unc.loc[("better", "t_mc")]
    assert row.resolved and 0 < row.delta_lo < 0.2 < row.delta_hi  # t-based seed component: 3 seeds cost width
    assert row.ci_lo < 0.7 < row.ci_hi and row.n_docs == 400 and row.n_seeds == 3
    assert unc.loc[("auto", "t_mc")].resolved is None  # the reference has no difference to itself


def test_no_difference_is_not_resolved():
    rng = np.random.default_rng(2)
    base = bernoulli(0.6, 300, rng)
    same = base.copy()
    ones, zeros = np.flatnonzero(base == 1)[:15], np.flatnonzero(base == 0)[:15]
    same[ones], same[zeros] = 0, 1  # 15 documents won, 15 lost: the same mean, a different model
    rows = mc_rows("auto", 0, base) + mc_rows("other", 0, same)
    row = bootstrap_model(pd.DataFrame(rows), "auto", n_boot=1000).set_index(["method", "task"]).loc[("other", "t_mc")]
    assert row.delta == 0.0 and row.delta_lo < 0 < row.delta_hi and not row.resolved


def test_paired_documents_resolve_what_unpaired_noise_hides():
    """A method right on exactly the same documents plus 12 more: +4 points, resolved by pairing
    although each method's own interval is ~11 points wide."""
    rng = np.random.default_rng(3)
    a = bernoulli(0.5, 300, rng)
    b = a.copy()
    b[np.flatnonzero(a == 0)[:12]] = 1
    unc = bootstrap_model(pd.DataFrame(mc_rows("auto", 0, a) + mc_rows("b", 0, b)), "auto", n_boot=1000)
    row = unc.set_index(["method", "task"]).loc[("b", "t_mc")]
    assert row.delta == pytest.approx(12 / 300) and row.resolved
    assert row.ci_hi - row.ci_lo > 0.08


def test_disagreeing_seeds_widen_the_interval():
    rng = np.random.default_rng(4)
    docs = bernoulli(0.5, 200, rng)
    rows = mc_rows("steady", 0, docs) + mc_rows("steady", 1, docs) + mc_rows("steady", 2, docs)
    rows += mc_rows("shaky", 0, bernoulli(0.2, 200, rng)) + mc_rows("shaky", 1, bernoulli(0.5, 200, rng))
    rows += mc_rows("shaky", 2, bernoulli(0.8, 200, rng))
    unc = bootstrap_model(pd.DataFrame(rows), None, n_boot=1000).query("task == 't_mc'").set_index("method")
    width = unc["ci_hi"] - unc["ci_lo"]
    assert width["shaky"] > 2 * width["steady"]
    assert unc["delta"].isna().all()  # no reference: no differences


def test_ratio_metric_average_and_direction():
    """bits_per_byte = Σ(-ll)/ln2 / Σbytes like lm-eval; the average leaves perplexity tasks out."""
    rows = []
    for method, ll in (("auto", [-100.0, -50.0]), ("worse", [-130.0, -70.0])):
        for d, (lik, b) in enumerate(zip(ll, (60.0, 40.0), strict=True)):
            rows += [{"model": "m", "method": method, "seed": 0, "task": "general_text", "doc_id": d, "metric": k,
                      "value": v} for k, v in (("loglikelihood", lik), ("bytes", b), ("words", 10.0), ("tokens", 20.0))]
        rows += mc_rows(method, 0, [1, 0, 1, 1])
    unc = bootstrap_model(pd.DataFrame(rows), "auto", extra={"general_text": ["nats_per_token"]}, n_boot=200)
    unc = unc.set_index(["method", "task", "metric"])
    bpb = unc.loc[("auto", "general_text", "bits_per_byte")]
    assert bpb["mean"] == pytest.approx(150 / math.log(2) / 100) and bpb.lower_is_better
    assert unc.loc[("worse", "general_text", "nats_per_token"), "delta"] == pytest.approx((200 - 150) / 40)
    avg = unc.loc[("auto", "average", "main")]
    assert avg["mean"] == pytest.approx(0.75)  # the t_mc accuracy alone
    assert corpus_value("word_perplexity", {"loglikelihood": np.array([-10.0]), "words": np.array([5.0])}) == \
        pytest.approx(math.exp(2.0))


def test_main_metrics_per_task():
    assert main_metric("hellaswag", ["acc", "acc_norm"]) == "acc_norm"
    assert main_metric("boolq", ["acc"]) == "acc" and main_metric("piqa", ["acc", "acc_norm"]) == "acc"
    assert main_metric("synth_mc", ["acc", "acc_norm"]) == "acc_norm"
    assert main_metric("general_text", ["bits_per_byte", "word_perplexity"]) == "bits_per_byte"
    assert main_metric("other", ["exact_match[x]"]) == "exact_match[x]"


def test_paired_difference_needs_the_same_documents():
    a = task_data(pd.DataFrame(mc_rows("a", 0, [1, 1, 0, 1])), "acc_norm", [0, 1, 2, 3])
    b = task_data(pd.DataFrame(mc_rows("b", 0, [0, 0, 0, 1])), "acc_norm", [0, 1, 2, 3])
    d = paired_difference(a, b, n_boot=500)
    assert d["delta"] == pytest.approx(0.5) and d["lo"] < 0.5 < d["hi"] and not d["resolved"]  # 4 documents: t_3
    with pytest.raises(ValueError, match="same documents"):
        paired_difference(a, task_data(pd.DataFrame(mc_rows("c", 0, [1, 0])), "acc_norm", [0, 1]))


def test_different_seed_lists_are_not_paired():
    """A 1-seed method against a 3-seed reference: documents paired, the reference's seed spread kept."""
    rng = np.random.default_rng(5)
    rows = [r for s, p in enumerate((0.3, 0.5, 0.7)) for r in mc_rows("auto", s, bernoulli(p, 200, rng))]
    rows += mc_rows("one", 0, bernoulli(0.5, 200, rng))
    unc = bootstrap_model(pd.DataFrame(rows), "auto", n_boot=500).query("task == 't_mc'").set_index("method")
    one = unc.loc["one"]
    assert one.pairing.startswith("documents; seeds of the side with several") and not one.resolved
    assert one.delta_hi - one.delta_lo > 0.3  # AutoQRA's seeds disagree by 20 points each
    assert unc.loc["auto"].pairing == "seeds + documents"


def test_shared_seeds_are_paired_when_the_lists_differ():
    """A 3-seed method against a 5-seed reference whose seeds 0-2 it shares: a seed effect common to
    both methods (sd 15 points here) cancels in the pairing on the shared seeds, so a true +8 points
    is resolved; unpaired, the seed effect would hide it. The Δ is the shared seeds' Δ."""
    rng = np.random.default_rng(11)
    effect = [0.3, 0.6, 0.45, 0.35, 0.55]  # seed s moves every method the same way
    rows = [r for s, p in enumerate(effect) for r in mc_rows("auto", s, bernoulli(p, 400, rng))]
    rows += [r for s in range(3) for r in mc_rows("lora", s, bernoulli(effect[s] + 0.08, 400, rng))]
    unc = bootstrap_model(pd.DataFrame(rows), "auto", n_boot=500).query("task == 't_mc'").set_index("method")
    lora = unc.loc["lora"]
    assert lora.pairing == "seeds + documents, paired on the 3 shared seeds"
    assert lora.resolved and lora.delta_lo > 0 and lora.delta_hi - lora.delta_lo < 0.12
    df = pd.DataFrame(rows)
    per_seed = df[df.seed < 3].groupby(["method", "seed"])["value"].mean().unstack(0)
    assert lora.delta == pytest.approx((per_seed["lora"] - per_seed["auto"]).mean())
    assert unc.loc["lora", "n_seeds"] == 3 and unc.loc["auto", "n_seeds"] == 5
