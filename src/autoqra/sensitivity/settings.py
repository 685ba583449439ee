"""Stage-0 settings and the calibration text every fidelity probe is scored on."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from autoqra.data import format_prompt
from autoqra.errors import DatasetError
from autoqra.plan import DEFAULT_BITS_LADDER

PLASTICITY_METHODS = ("grad_norm", "loss_drop")


@dataclass
class SensitivitySettings:
    """Stage-0 knobs; saved in the summary beside the priors."""

    n_calib: int = 16  # calibration sequences
    calib_len: int = 128  # tokens per calibration sequence
    calib_source: str = "data"  # "data" (training split, prompt template + response) or a plain-text file
    calib_batch_size: int = 4
    low_bits: int | None = None  # None: the lowest rung of bits_ladder
    bits_ladder: tuple[int, ...] = DEFAULT_BITS_LADDER
    plasticity: str = "grad_norm"  # or "loss_drop"
    r_max: int = 16
    grad_batches: int = 4  # batches averaged for grad_norm; held-out batches for loss_drop
    batch_size: int = 4
    max_seq_len: int = 256
    loss_drop_steps: int = 10
    lr: float = 1e-3  # loss_drop only; a 10-step probe needs a larger step than full fine-tuning
    alpha_per_rank: float = 2.0
    grad_checkpointing: bool = False  # plasticity probe: recompute block activations in backward
    seed: int = 0

    def __post_init__(self) -> None:
        if self.plasticity not in PLASTICITY_METHODS:
            raise ValueError(f"sensitivity.plasticity: expected one of {list(PLASTICITY_METHODS)}, "
                             f"got {self.plasticity!r}")
        for key in ("n_calib", "calib_len", "calib_batch_size", "r_max", "grad_batches", "batch_size",
                    "loss_drop_steps"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"sensitivity.{key}: expected a positive integer, got {getattr(self, key)!r}")
        self.bits_ladder = tuple(int(b) for b in self.bits_ladder)

    @property
    def resolved_low_bits(self) -> int:
        """The bit-width every block is probed at."""
        bits = int(self.low_bits if self.low_bits is not None else min(self.bits_ladder))
        if bits >= 16:
            raise ValueError(f"sensitivity.low_bits: {bits}-bit is not quantized; expected one of 2, 3, 4, 8")
        return bits


def calibration_ids(tokenizer: Any, settings: SensitivitySettings, records: list[dict] | None = None) -> torch.Tensor:
    """``(n, calib_len)`` token windows cut from concatenated calibration text (n ≤ n_calib)."""
    need = settings.n_calib * settings.calib_len
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    if settings.calib_source == "data":
        if not records:
            raise DatasetError("sensitivity calibration: the training split has no records")
        order = list(range(len(records)))
        random.Random(settings.seed).shuffle(order)
        for i in order:  # rendered exactly as the model sees them in fine-tuning
            r = records[i]
            ids += tokenizer(format_prompt(r) + str(r["output"]), add_special_tokens=False)["input_ids"] + [eos]
            if len(ids) >= need:
                break
        where = "the training split"
    else:
        path = Path(settings.calib_source)
        if not path.is_file():
            raise DatasetError(f"sensitivity.calib_source: {path} is not a file (expected 'data' or a "
                               "plain-text file)")
        with open(path, encoding="utf-8") as fh:
            for line in fh:  # line by line: only the first ``need`` tokens are ever tokenized
                ids += tokenizer(line, add_special_tokens=False)["input_ids"]
                if len(ids) >= need:
                    break
        where = str(path)
    n = min(settings.n_calib, len(ids) // settings.calib_len)
    if n == 0:
        raise DatasetError(f"sensitivity calibration: {where} has {len(ids)} tokens, fewer than one "
                           f"window of calib_len={settings.calib_len}")
    return torch.tensor(ids[: n * settings.calib_len], dtype=torch.long).view(n, settings.calib_len)
