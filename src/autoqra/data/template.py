"""Alpaca-style plain-text prompt template and response-only tokenization.

The template is deliberately short (no Alpaca preamble): the micro and 135M models train on
sequences of a few dozen tokens, and a fixed 30-token preamble would dominate them. torch is
imported only inside ``collate`` so the data package stays cheap to import.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

IGNORE_INDEX = -100
RESPONSE_MARKER = "### Response:\n"


def format_prompt(record: Mapping[str, Any]) -> str:
    """Render the prompt (instruction, optional input, response marker) of one record."""
    text = f"### Instruction:\n{record['instruction']}\n\n"
    inp = record.get("input") or ""
    if inp:
        text += f"### Input:\n{inp}\n\n"
    return text + RESPONSE_MARKER


def format_example(record: Mapping[str, Any]) -> tuple[str, str]:
    """Return ``(prompt, response)`` for one record; the response is its ``output`` field."""
    return format_prompt(record), str(record["output"])


def tokenize_example(tokenizer: Any, record: Mapping[str, Any], max_len: int) -> dict[str, list[int]]:
    """Token ids and labels (``-100`` on the prompt) of one record, EOS after the response."""
    if max_len < 2:
        # A causal LM predicts token t from tokens < t: one token alone supervises nothing.
        raise ValueError(f"max_len must be >= 2, got {max_len}")
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise ValueError("tokenizer has no eos_token_id; the response must end with EOS")
    prompt, response = format_example(record)
    # Tokenized separately so the prompt/response boundary is exact; the tokenizer may add BOS.
    prompt_ids = list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    resp_ids = list(tokenizer(response, add_special_tokens=False)["input_ids"]) + [eos]
    if len(prompt_ids) + len(resp_ids) > max_len:
        if len(prompt_ids) < max_len:
            resp_ids = resp_ids[: max_len - len(prompt_ids)]  # keep the prompt, cut the tail
        else:
            # The prompt alone fills the window: keep some response and the prompt's end.
            n_resp = min(len(resp_ids), max(1, max_len // 4))
            resp_ids = resp_ids[:n_resp]
            prompt_ids = prompt_ids[len(prompt_ids) - (max_len - n_resp):]
    return {
        "input_ids": prompt_ids + resp_ids,
        "labels": [IGNORE_INDEX] * len(prompt_ids) + resp_ids,
    }


def collate(batch: Sequence[Mapping[str, Sequence[int]]], pad_id: int) -> dict[str, Any]:
    """Right-pad a batch of tokenized examples into ``input_ids``, ``labels``, ``attention_mask``."""
    import torch

    if not batch:
        raise ValueError("cannot collate an empty batch")
    width = max(len(ex["input_ids"]) for ex in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, ex in enumerate(batch):
        n = len(ex["input_ids"])
        if len(ex["labels"]) != n:
            raise ValueError(f"example {i}: {n} input_ids but {len(ex['labels'])} labels")
        ids[i, :n] = torch.tensor(list(ex["input_ids"]), dtype=torch.long)
        labels[i, :n] = torch.tensor(list(ex["labels"]), dtype=torch.long)
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}
