"""Stage-0 sensitivity priors on the micro model: JSD, fidelity, plasticity, correlations, priors file."""

import math

import numpy as np
import pytest
import torch

from autoqra.data import load_split, prepare_data
from autoqra.errors import DatasetError
from autoqra.models import prepare_model
from autoqra.plan import Plan
from autoqra.quant import BaseModel, QuantCache
from autoqra.quant.build import quantize_base
from autoqra.sensitivity import (
    SensitivitySettings,
    calibration_ids,
    correlations,
    fidelity_sensitivity,
    jsd_from_logits,
    normalise,
    plasticity,
    read_priors,
    run_sensitivity,
    write_priors,
)
from autoqra.sensitivity.fidelity import jsd_sum, probe_plan, reference, run_layers

MICRO = {"source": "micro", "id": None, "revision": None, "micro": None}
DATA = {"source": "synthetic", "name": "s", "path": None, "id": None, "n_train": 200, "n_val": 50,
        "n_test": 50, "skills": None, "max_seq_len": 96}
FAST = dict(n_calib=4, calib_len=32, grad_batches=2, batch_size=4, max_seq_len=96, r_max=8)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("sens")
    prepare_model(MICRO, root / "m", seed=0)
    prepare_data(DATA, root / "d", seed=0)
    return root / "m", root / "d"


@pytest.fixture(scope="module")
def base(dirs):
    return BaseModel(dirs[0], keep_dense=True)


@pytest.fixture(scope="module")
def records(dirs):
    return load_split(dirs[1], "train")


@pytest.fixture(scope="module")
def run(dirs, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    rows, summary = run_sensitivity(*dirs, cache, SensitivitySettings(**FAST), "hqq", 32)
    return rows, summary, cache


def test_jsd_is_symmetric_zero_on_equal_inputs_and_bounded_by_ln2():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 5, 50, generator=g), torch.randn(3, 5, 50, generator=g) * 4
    d = jsd_from_logits(a, b)
    assert d.shape == (3, 5) and torch.all(d > 0)
    assert torch.allclose(d, jsd_from_logits(b, a), atol=1e-6)
    assert torch.all(jsd_from_logits(a, a) == 0)
    assert torch.all(jsd_from_logits(a, a + 7.0) < 1e-6)  # softmax is shift-invariant
    # disjoint one-hot distributions reach the bound ln 2 (and stay finite: computed in log space)
    p = torch.full((2, 4), -1e4)
    p[0, 0], p[1, 1] = 1e4, 1e4
    assert jsd_from_logits(p[0], p[1]).item() == pytest.approx(math.log(2), abs=1e-6)
    # the hand-computed value for two Bernoulli distributions
    pp, qq = torch.tensor([0.9, 0.1]), torch.tensor([0.5, 0.5])
    m = (pp + qq) / 2
    expect = 0.5 * (pp * (pp / m).log()).sum() + 0.5 * (qq * (qq / m).log()).sum()
    assert jsd_from_logits(pp.log(), qq.log()).item() == pytest.approx(expect.item(), rel=1e-5)


def test_calibration_windows_from_data_and_from_a_text_file(base, records, tmp_path):
    s = SensitivitySettings(n_calib=3, calib_len=16)
    ids = calibration_ids(base.tokenizer, s, records)
    assert ids.shape == (3, 16) and torch.equal(ids, calibration_ids(base.tokenizer, s, records))
    text = tmp_path / "calib.txt"
    text.write_text("The farmer opened 12 red apples in the house.\n" * 40)
    ids = calibration_ids(base.tokenizer, SensitivitySettings(n_calib=3, calib_len=16, calib_source=str(text)))
    assert ids.shape == (3, 16)
    short = tmp_path / "short.txt"
    short.write_text("hi\n")
    with pytest.raises(DatasetError, match="short.txt"):
        calibration_ids(base.tokenizer, SensitivitySettings(calib_len=16, calib_source=str(short)))
    with pytest.raises(DatasetError, match="missing.txt"):
        calibration_ids(base.tokenizer, SensitivitySettings(calib_source=str(tmp_path / "missing.txt")))


def test_fidelity_is_zero_at_16_bit_positive_at_low_bits_and_grows_as_bits_drop(base, records, tmp_path):
    cache = QuantCache(tmp_path, base.base_id)
    calib = calibration_ids(base.tokenizer, SensitivitySettings(**FAST), records)
    # a random micro model is nearly uniform in its outputs, so only the ordering is compared across bits
    iq2 = fidelity_sensitivity(base, cache, SensitivitySettings(**FAST, low_bits=2), "hqq", 32, calib=calib)
    iq8 = fidelity_sensitivity(base, cache, SensitivitySettings(**FAST, low_bits=8), "hqq", 32, calib=calib)
    assert iq2.shape == (4,) and np.all(np.isfinite(iq2)) and np.all(iq2 > 0)
    assert np.all(iq8 < iq2 / 10)
    with torch.no_grad():  # the base against its all-16-bit copy: the same distribution exactly
        same = quantize_base(base, Plan.uniform(4, 16, 1, "none", 32), cache)
        assert jsd_from_logits(base.model(input_ids=calib).logits, same(input_ids=calib).logits).max() == 0
    with pytest.raises(ValueError, match="low_bits"):
        fidelity_sensitivity(base, cache, SensitivitySettings(**FAST, low_bits=16), "hqq", 32, calib=calib)


def test_probe_from_cached_block_inputs_matches_a_full_forward(base, records, tmp_path):
    cache = QuantCache(tmp_path, base.base_id)
    calib = calibration_ids(base.tokenizer, SensitivitySettings(**FAST), records)
    ids = calib[:2]
    ref, inputs = reference(base.model, ids)
    assert len(inputs) == 4 and inputs[0].shape == (2, 32, 64) and ref.shape == (2, 32, 64)
    probe = quantize_base(base, probe_plan(4, 2, "hqq", 32), cache)
    low, own = list(probe.get_submodule("model").layers), list(base.model.get_submodule("model").layers)
    head = base.model.get_output_embeddings()
    with torch.no_grad():
        base_logp = torch.log_softmax(base.model(input_ids=ids).logits, -1)
        for block in (0, 2, 3):
            full = run_layers(probe, [*own[:block], low[block], *own[block + 1:]], input_ids=ids)
            cut = run_layers(probe, [low[block], *own[block + 1:]], hidden=inputs[block])
            jsd_full, jsd_cut = jsd_sum(head, ref, full, 7), jsd_sum(head, ref, cut, 64)  # chunking is exact
            assert jsd_full > 0 and jsd_cut == pytest.approx(jsd_full, rel=1e-5)
            # the swapped-in block is "block ℓ alone at low bits": the same as a copy quantized at ℓ only
            bits = tuple(2 if b == block else 16 for b in range(4))
            alone = quantize_base(base, Plan(bits, (1,) * 4, group_size=32), cache)(input_ids=ids).logits
            expect = jsd_from_logits(base_logp, alone).double().sum().item()
            assert jsd_full == pytest.approx(expect, rel=1e-5)


def test_run_gives_varying_finite_priors(run):
    rows, summary, _ = run
    assert [r["block"] for r in rows] == [0, 1, 2, 3]
    iq, ir = np.array([r["iq_raw"] for r in rows]), np.array([r["ir_raw"] for r in rows])
    assert np.all(np.isfinite(iq)) and np.all(iq >= 0) and np.ptp(iq) > 0
    assert np.all(np.isfinite(ir)) and np.all(ir > 0) and np.ptp(ir) > 0  # grad_norm: squared norms
    for key in ("iq_norm", "ir_norm"):
        col = [r[key] for r in rows]
        assert min(col) == 0.0 and max(col) == 1.0
    assert all(r["combined"] == pytest.approx((r["iq_norm"] + r["ir_norm"]) / 2) for r in rows)
    assert summary["n_calib_tokens"] == 4 * 32 and summary["settings"]["low_bits"] == 2
    assert set(summary["timings"]) >= {"fidelity", "plasticity", "total"}
    assert summary["quant_cache"] == {"hits": 0, "misses": 4 * 7}  # each block's 7 projections, once


def test_rerun_is_identical_and_reuses_the_quantized_block_cache(run, dirs):
    rows, _, cache = run
    files = sorted(p.name for p in cache.rglob("*.safetensors"))
    rows2, summary2 = run_sensitivity(*dirs, cache, SensitivitySettings(**FAST), "hqq", 32)
    assert rows2 == rows
    assert summary2["quant_cache"] == {"hits": 28, "misses": 0}
    assert sorted(p.name for p in cache.rglob("*.safetensors")) == files


def test_stage0_result_is_cached_across_runs(run, dirs, tmp_path, monkeypatch):
    import autoqra.sensitivity.stage as sens

    cache = tmp_path / "shared"
    rows, summary = sens.cached_run_sensitivity(*dirs, cache, SensitivitySettings(**FAST), "hqq", 32)
    assert rows == run[0] and summary["cached"] is False
    assert len(list((cache / "sensitivity").rglob("*.json"))) == 1

    def no_work(*a, **k):
        raise AssertionError("Stage 0 recomputed although its result is cached")

    monkeypatch.setattr(sens, "run_sensitivity", no_work)
    again, summary2 = sens.cached_run_sensitivity(*dirs, cache, SensitivitySettings(**FAST), "hqq", 32)
    assert again == rows and summary2["cached"] is True
    with pytest.raises(AssertionError, match="recomputed"):  # other settings: another entry
        sens.cached_run_sensitivity(*dirs, cache, SensitivitySettings(**{**FAST, "seed": 1}), "hqq", 32)
    with pytest.raises(AssertionError, match="recomputed"):
        sens.cached_run_sensitivity(*dirs, cache, SensitivitySettings(**FAST), "hqq", 64)
    with monkeypatch.context() as m:  # changed library code: another entry
        m.setattr(sens, "code_sha", lambda *parts: "0" * 16)
        with pytest.raises(AssertionError, match="recomputed"):
            sens.cached_run_sensitivity(*dirs, cache, SensitivitySettings(**FAST), "hqq", 32)
    entry = next((cache / "sensitivity").rglob("*.json"))
    entry.write_text('{"key": ')  # a torn entry is recomputed, not trusted
    with pytest.raises(AssertionError, match="recomputed"):
        sens.cached_run_sensitivity(*dirs, cache, SensitivitySettings(**FAST), "hqq", 32)


def test_seed_changes_the_plasticity_probe(base, records, tmp_path):
    cache = QuantCache(tmp_path, base.base_id)
    a = plasticity(base, cache, base.tokenizer, records, SensitivitySettings(**FAST, seed=0))
    b = plasticity(base, cache, base.tokenizer, records, SensitivitySettings(**FAST, seed=1))
    assert np.all(a > 0) and not np.allclose(a, b)


def test_gradient_checkpointing_leaves_the_plasticity_probe_unchanged(base, records, tmp_path):
    cache = QuantCache(tmp_path, base.base_id)
    plain = plasticity(base, cache, base.tokenizer, records, SensitivitySettings(**FAST))
    ckpt = plasticity(base, cache, base.tokenizer, records, SensitivitySettings(**FAST, grad_checkpointing=True))
    assert np.all(plain > 0) and np.allclose(ckpt, plain, rtol=1e-5, atol=0)


def test_loss_drop_plasticity_runs_and_lowers_the_loss(base, records, tmp_path):
    s = SensitivitySettings(**{**FAST, "plasticity": "loss_drop", "loss_drop_steps": 3, "lr": 1e-2})
    ir = plasticity(base, QuantCache(tmp_path, base.base_id), base.tokenizer, records, s)
    assert ir.shape == (4,) and np.all(np.isfinite(ir)) and np.ptp(ir) > 0
    assert ir.max() > 0  # some block's adapter learns something in 3 steps
    again = plasticity(base, QuantCache(tmp_path, base.base_id), base.tokenizer, records, s)
    assert np.array_equal(ir, again)


def test_normalise_and_correlations_on_hand_made_vectors():
    assert normalise([2.0, 4.0, 3.0]).tolist() == [0.0, 1.0, 0.5]
    assert normalise([7.0, 7.0]).tolist() == [0.5, 0.5]
    with pytest.raises(ValueError, match="non-finite"):
        normalise([1.0, float("nan")])
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    c = correlations(x, 3 * x + 1)
    assert c["pearson"] == pytest.approx(1.0) and c["spearman"] == pytest.approx(1.0)
    assert c["k"] == 2 and c["topk_overlap"] == 1.0
    c = correlations(x, -x)
    assert c["spearman"] == pytest.approx(-1.0) and c["topk_overlap"] == 0.0
    # top-4 of x = {4..7}; of y = {7, 6, 0, 1}: two shared
    y = np.array([5.0, 4.0, 0.0, 0.0, 0.0, 0.0, 6.0, 7.0])
    assert correlations(x, y, k=4)["topk_overlap"] == 0.5
    assert correlations(x, np.ones(8))["pearson"] is None  # undefined for a constant vector


def test_priors_round_trip_and_malformed_files(run, tmp_path):
    rows = run[0]
    path = write_priors(rows, tmp_path / "priors.tsv")
    imp_q, imp_r = read_priors(path)
    assert imp_q.tolist() == [r["iq_norm"] for r in rows] and imp_r.tolist() == [r["ir_norm"] for r in rows]
    header = "block\tiq_raw\tiq_norm\tir_raw\tir_norm\tcombined\n"
    bad = {
        "gap.tsv": header + "0\t1\t0.0\t1\t0.0\t0\n2\t1\t1.0\t1\t1.0\t1\n",
        "nan.tsv": header + "0\t1\tnan\t1\t0.0\t0\n",
        "cols.tsv": "block\tiq_norm\n0\t0.5\n",
        "text.tsv": header + "zero\t1\t0.5\t1\t0.5\t0.5\n",
        "empty.tsv": header,
    }
    for name, text in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(DatasetError, match=name):
            read_priors(tmp_path / name)
    with pytest.raises(DatasetError, match="not found"):
        read_priors(tmp_path / "absent.tsv")
