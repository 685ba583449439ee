"""Next-token loss on general English text (``autoqra.data.general_text``): how much of the base
model's general language ability a quantized, fine-tuned plan keeps.

Each paragraph is scored like lm-eval's ``loglikelihood_rolling`` scores a document: every token is
predicted, the first one after a prefix token (BOS if the tokenizer has one, else EOS), here within
one window of ``max_len`` tokens (longer paragraphs are cut). The loss is the token-weighted mean,
in nats per token, so it is comparable between plans of one base model (same tokenizer).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from autoqra.data import IGNORE_INDEX, collate
from autoqra.train import model_device, response_loss_sum


def tokenize_texts(tokenizer: Any, texts: Sequence[str], max_len: int) -> list[dict[str, list[int]]]:
    """``{input_ids, labels}`` per text: the prefix token, then the text's tokens (all supervised)."""
    if max_len < 2:
        raise ValueError(f"general text max_len must be >= 2, got {max_len}")
    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if prefix is None:
        raise ValueError("tokenizer has neither a BOS nor an EOS token to start a document with")
    out = []
    for text in texts:
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])[:max_len - 1]
        out.append({"input_ids": [prefix, *ids], "labels": [IGNORE_INDEX, *ids]})
    return out


def general_text_loss(model: Any, tokenizer: Any, texts: Sequence[str], *, max_len: int = 128,
                      batch_size: int = 8) -> dict[str, Any]:
    """``{"loss": nats/token, "tokens": n, "per_text": [(summed nats, tokens), ...]}`` over ``texts``."""
    if not texts:
        raise ValueError("no general-text documents to score")
    examples = tokenize_texts(tokenizer, texts, max_len)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = model_device(model)
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    per_text: list[tuple[float, int]] = [(0.0, 0)] * len(examples)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                batch = {k: v.to(device) for k, v in collate([examples[i] for i in idx], pad).items()}
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    _, sums = response_loss_sum(model, batch)
                counts = (batch["labels"][:, 1:] != IGNORE_INDEX).sum(dim=1)
                for i, s, n in zip(idx, sums.tolist(), counts.tolist(), strict=True):
                    per_text[i] = (float(s), int(n))
    finally:
        model.train(was_training)
    tokens = sum(n for _, n in per_text)
    return {"loss": sum(s for s, _ in per_text) / max(1, tokens), "tokens": tokens, "per_text": per_text}
