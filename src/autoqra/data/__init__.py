"""Instruction data: bundled synthetic generator, Alpaca files and hub ids, prompt template.

Light to import (no torch); ``collate`` imports torch when called.
"""

from autoqra.data.loaders import load_alpaca, load_hub, load_jsonl, validate_records
from autoqra.data.prepare import load_split, prepare_data, split_records
from autoqra.data.synthetic import SKILLS, SPLITS, generate_synthetic, tokenizer_corpus
from autoqra.data.template import (
    IGNORE_INDEX,
    collate,
    format_example,
    format_prompt,
    tokenize_example,
)

__all__ = [
    "IGNORE_INDEX", "SKILLS", "SPLITS", "collate", "format_example", "format_prompt",
    "generate_synthetic", "load_alpaca", "load_hub", "load_jsonl", "load_split", "prepare_data",
    "split_records", "tokenize_example", "tokenizer_corpus", "validate_records",
]
