"""The micro model: a tiny random Llama with a byte-level BPE tokenizer trained here, for tests and CI."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from autoqra.errors import ModelError

MICRO_DEFAULTS: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 192,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,  # GQA, so k/v shapes differ from q/o as in real models
    "vocab_size": 512,
    "max_position_embeddings": 512,
    "tie_word_embeddings": False,
}
EOS_TOKEN = "<|endoftext|>"
# A separate pad token: with pad == eos, collators that mask padding would also mask the real EOS.
PAD_TOKEN = "<|pad|>"
SPECIAL_TOKENS = (EOS_TOKEN, PAD_TOKEN)
_BYTE_ALPHABET = 256


def micro_settings(micro: Mapping[str, Any] | None) -> dict[str, Any]:
    """MICRO_DEFAULTS overridden by ``micro``; ModelError naming the key for unknown or invalid values."""
    micro = dict(micro or {})
    for key in micro:
        if key not in MICRO_DEFAULTS:
            raise ModelError(f"unknown key model.micro.{key}; allowed: {sorted(MICRO_DEFAULTS)}")
    s = {**MICRO_DEFAULTS, **micro}
    for key, default in MICRO_DEFAULTS.items():
        if isinstance(default, bool):
            if not isinstance(s[key], bool):
                raise ModelError(f"model.micro.{key} must be true or false, got {s[key]!r}")
        elif isinstance(s[key], bool) or not isinstance(s[key], int) or s[key] <= 0:
            raise ModelError(f"model.micro.{key} must be a positive integer, got {s[key]!r}")
    if s["hidden_size"] % s["num_attention_heads"]:
        raise ModelError(f"model.micro.hidden_size ({s['hidden_size']}) must be divisible by "
                         f"model.micro.num_attention_heads ({s['num_attention_heads']})")
    if s["num_attention_heads"] % s["num_key_value_heads"]:
        raise ModelError(f"model.micro.num_attention_heads ({s['num_attention_heads']}) must be divisible "
                         f"by model.micro.num_key_value_heads ({s['num_key_value_heads']})")
    if (s["hidden_size"] // s["num_attention_heads"]) % 2:
        raise ModelError("model.micro.hidden_size / num_attention_heads (the head dim) must be even for RoPE")
    min_vocab = _BYTE_ALPHABET + len(SPECIAL_TOKENS)
    if s["vocab_size"] < min_vocab:
        raise ModelError(f"model.micro.vocab_size must be >= {min_vocab} (256 byte tokens + specials), "
                         f"got {s['vocab_size']}")
    return s


def train_tokenizer(texts: Iterable[str], vocab_size: int, model_max_length: int) -> Any:
    """Byte-level BPE trained on ``texts``, wrapped as a PreTrainedTokenizerFast (deterministic for fixed texts)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(texts), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS_TOKEN, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN,
        model_max_length=model_max_length, padding_side="right")


def build_micro(micro: Mapping[str, Any] | None, seed: int, texts: Iterable[str]) -> tuple[Any, Any]:
    """(LlamaForCausalLM float32, tokenizer) with weights drawn from ``torch.manual_seed(seed)``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    s = micro_settings(micro)
    tokenizer = train_tokenizer(texts, s["vocab_size"], s["max_position_embeddings"])
    eos_id = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    config = LlamaConfig(
        **s, bos_token_id=eos_id, eos_token_id=eos_id,
        pad_token_id=tokenizer.convert_tokens_to_ids(PAD_TOKEN), dtype="float32")
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.generation_config.pad_token_id = config.pad_token_id
    return model.eval(), tokenizer
