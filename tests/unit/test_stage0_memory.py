"""Stage 0 in bounded memory: the measured peak grows with the calibration batch, not with the number
of calibration tokens; the analytic estimate fits paper-scale models in 40 GB and refuses, before
any work, settings that cannot fit the device."""

import json
import subprocess
import sys

import pytest
import yaml

from autoqra.config import REPO_ROOT
from autoqra.data import prepare_data
from autoqra.errors import ConfigError
from autoqra.memory import ModelShape
from autoqra.models import prepare_model
from autoqra.plan import quantizer_map
from autoqra.sensitivity import SensitivitySettings, run_sensitivity, stage0_footprint

# Shapes from the public config.json of each paper model (Qwen/Qwen3-4B, meta-llama/Meta-Llama-3-8B).
QWEN3_4B = {"model_type": "qwen3", "hidden_size": 2560, "head_dim": 128, "intermediate_size": 9728,
            "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 151936,
            "tie_word_embeddings": True}
LLAMA3_8B = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
             "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": False}
DATA = {"source": "synthetic", "name": "s", "path": None, "id": None, "n_train": 200, "n_val": 20,
        "n_test": 20, "skills": None, "max_seq_len": 96}


def paper_settings(**override) -> tuple[SensitivitySettings, dict]:
    cfg = yaml.safe_load((REPO_ROOT / "config" / "paper.yaml").read_text())
    space = cfg["search_space"]
    s = SensitivitySettings(**{**cfg["sensitivity"], **override}, bits_ladder=tuple(space["bits"]),
                            max_seq_len=cfg["data"]["max_seq_len"])
    return s, space


def low_quantizer(space: dict) -> str:
    """The quantizer of the lowest rung, which Stage 0 probes with."""
    return quantizer_map(space["quantizers"])[min(space["bits"])]


@pytest.mark.parametrize("hf_config", [QWEN3_4B, LLAMA3_8B], ids=["qwen3-4b", "llama3-8b"])
def test_paper_scale_estimate_fits_40_gb_and_ignores_the_calibration_size(hf_config):
    shape = ModelShape.from_config(hf_config)
    s, space = paper_settings()
    fp = stage0_footprint(shape, s, low_quantizer(space), space["group_size"], "cuda")
    assert 10e9 < fp["peak_bytes"] <= 40e9, fp["phases"]
    weights = 2 * (shape.n_blocks * shape.block_weight_params + sum(shape.fixed_params.values()))
    assert fp["fidelity"]["weights"] == weights
    # the old design kept every calibration token's fp32 log-probs: 128 x 2048 x vocab x 4 bytes
    assert s.n_calib * s.calib_len * shape.vocab_size * 4 > 130e9
    more = stage0_footprint(shape, paper_settings(n_calib=4 * s.n_calib, grad_batches=4 * s.grad_batches)[0],
                            low_quantizer(space), space["group_size"], "cuda")
    assert more["peak_bytes"] == fp["peak_bytes"]
    wider = stage0_footprint(shape, paper_settings(calib_batch_size=2 * s.calib_batch_size)[0],
                             low_quantizer(space), space["group_size"], "cuda")
    assert wider["phases"]["fidelity"] > fp["phases"]["fidelity"] + 1e9
    # gradient checkpointing is what brings the plasticity pass of the 8B model under 40 GB
    full = stage0_footprint(shape, paper_settings(grad_checkpointing=False)[0], low_quantizer(space),
                            space["group_size"], "cuda")
    assert full["phases"]["plasticity"] > fp["phases"]["plasticity"] + 8e9


@pytest.fixture(scope="module")
def big_vocab(tmp_path_factory):
    """A micro model with a vocabulary of 8192, so that logits dominate Stage 0's memory."""
    root = tmp_path_factory.mktemp("stage0mem")
    micro = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
             "num_key_value_heads": 2, "vocab_size": 8192, "max_position_embeddings": 256}
    prepare_model({"source": "micro", "id": None, "revision": None, "micro": micro}, root / "m", seed=0)
    prepare_data(DATA, root / "d", seed=0)
    return root


def test_stage0_refuses_settings_that_cannot_fit_before_loading_anything(big_vocab, monkeypatch):
    import autoqra.sensitivity.stage as stage

    def no_load(*a, **k):
        raise AssertionError("the model was loaded although the settings cannot fit")

    monkeypatch.setattr(stage, "BaseModel", no_load)
    huge = SensitivitySettings(n_calib=8, calib_len=4096, calib_batch_size=4096, low_bits=2)
    with pytest.raises(ConfigError, match=r"sensitivity\.calib_batch_size=4096 x sensitivity\.calib_len=4096"):
        run_sensitivity(big_vocab / "m", big_vocab / "d", big_vocab / "cache", huge, "hqq", 32, device="cpu")
    assert not (big_vocab / "cache").exists()


MEASURE = r"""
import ctypes, gc, json, re, sys
from pathlib import Path
import torch
from autoqra.data import load_split
from autoqra.quant import BaseModel, QuantCache
from autoqra.sensitivity import SensitivitySettings, calibration_ids, fidelity_sensitivity

torch.set_num_threads(1)
root = Path(sys.argv[1])
base = BaseModel(root / "m", device="cpu", keep_dense=True)
cache, records = QuantCache(root / "cache", base.base_id), load_split(root / "d", "train")
libc = ctypes.CDLL("libc.so.6")

def status(key):
    return int(re.search(key + r":\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024

def peak(n_calib, bs):
    s = SensitivitySettings(n_calib=n_calib, calib_len=64, calib_batch_size=bs, low_bits=2)
    calib = calibration_ids(base.tokenizer, s, records)
    gc.collect(); libc.malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak resident set
    start = status("VmRSS")
    fidelity_sensitivity(base, cache, s, "hqq", 32, calib=calib)
    return status("VmHWM") - start

peak(2, 1)  # warm-up: quantize the probe once, so that every measured run loads it from the cache
print(json.dumps({"tokens_x1": peak(8, 1), "tokens_x4": peak(32, 1), "batch_x8": peak(8, 8)}))
"""


def test_fidelity_peak_memory_grows_with_the_batch_not_the_calibration_tokens(big_vocab):
    # A fixed mmap threshold makes every large tensor its own mapping, returned to the OS when freed,
    # so the resident-set peak tracks the live tensors (glibc's adaptive threshold would hide frees).
    res = subprocess.run([sys.executable, "-c", MEASURE, str(big_vocab)], capture_output=True, text=True,
                         timeout=600, env={**__import__("os").environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
    assert res.returncode == 0, res.stderr[-3000:]
    peak = json.loads(res.stdout.strip().splitlines()[-1])
    logits_per_batch = 64 * 8192 * 4  # one sequence's fp32 logits: 2 MiB
    # 4x the calibration tokens: the old design's stored log-probs alone would add 24 x 2 MiB
    assert peak["tokens_x4"] - peak["tokens_x1"] < 3 * logits_per_batch, peak
    # 8x the batch: several chunk x vocab arrays of the larger batch live at once
    assert peak["batch_x8"] - peak["tokens_x1"] > 7 * 3 * logits_per_batch, peak
    shape = ModelShape.from_path(big_vocab / "m")

    def est(n_calib, bs):
        s = SensitivitySettings(n_calib=n_calib, calib_len=64, calib_batch_size=bs, low_bits=2)
        return stage0_footprint(shape, s, "hqq", 32, "cpu")["phases"]["fidelity"]

    assert est(32, 1) == est(8, 1)
    assert est(8, 8) - est(8, 1) >= peak["batch_x8"] - peak["tokens_x1"]  # an upper bound on the growth
