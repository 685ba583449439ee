"""``I_r(ℓ)``: how much the fine-tuning loss gains from adapter capacity at block ℓ (plasticity).

Two estimators (``SensitivitySettings.plasticity``): ``grad_norm`` (default), the first-order loss
decrease available to block ℓ's rank-r_max adapter at initialisation, and ``loss_drop``, a short
LoRA run per block. Peak memory is one training batch's activations (see ``footprint``).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from autoqra.data import collate, tokenize_example
from autoqra.plan import Plan
from autoqra.quant.build import BaseModel, build
from autoqra.quant.cache import QuantCache
from autoqra.sensitivity.settings import SensitivitySettings

log = logging.getLogger(__name__)


def _batches(tokenizer: Any, records: list[dict], settings: SensitivitySettings, n_batches: int,
             offset: int = 0) -> list[dict[str, torch.Tensor]]:
    """``n_batches`` response-only-loss batches from a seeded permutation (cycled if short)."""
    order = torch.randperm(len(records), generator=torch.Generator().manual_seed(settings.seed)).tolist()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = []
    for b in range(n_batches):
        idx = [order[(offset + b * settings.batch_size + j) % len(order)] for j in range(settings.batch_size)]
        out.append(collate([tokenize_example(tokenizer, records[i], settings.max_seq_len) for i in idx], pad))
    return out


def _loss(model: Any, batch: dict[str, torch.Tensor], device: str) -> torch.Tensor:
    return model(**{k: v.to(device) for k, v in batch.items()}, use_cache=False).loss


def _lora_params(model: Any, block: int, kind: str = "lora_") -> list[torch.nn.Parameter]:
    prefix = f".layers.{block}."
    return [p for name, p in model.named_parameters() if prefix in name and kind in name]


def plasticity(base: BaseModel, cache: QuantCache, tokenizer: Any, records: list[dict],
               settings: SensitivitySettings) -> np.ndarray:
    """Raw ``I_r`` per block, by ``settings.plasticity``.

    ``grad_norm`` (default; cost: ``grad_batches`` forward+backward passes in all). Rank-``r_max``
    LoRA on every block of the 16-bit model. At init B = 0, so ∇_A L = Bᵀ(…) = 0 while
    ∇_B L = (∂L/∂h)(A x)ᵀ·α/r ≠ 0: the first SGD step of size η on block ℓ's adapter lowers the
    loss by η·‖∇_{B_ℓ} L‖² to first order. I_r(ℓ) is ‖∇_{B_ℓ} L‖² summed over the block's 7
    projections and averaged over ``grad_batches`` batches of task data (loss on response tokens).

    ``loss_drop`` (cost: n_blocks × ``loss_drop_steps`` forward+backward passes plus n_blocks ×
    ``grad_batches`` evaluation passes — for 30 blocks and 10 steps, ~300 training steps). For each
    block ℓ, a rank-``r_max`` adapter that trains at ℓ only (all other adapters frozen at B = 0,
    i.e. inactive) is trained for ``loss_drop_steps`` AdamW steps from the same seeded init on the
    same batches; I_r(ℓ) = held-out loss before − after (held out: ``grad_batches`` batches of
    other training records, disjoint while the split is large enough). Negative if a block overfits.
    """
    n = base.n_blocks
    cache_dir = cache.cache_dir
    built = build(base.model_dir, Plan.uniform(n, 16, settings.r_max, "none"), cache_dir=cache_dir,
                  base=base, seed=settings.seed, lora_dropout=0.0, alpha_per_rank=settings.alpha_per_rank)
    model = built.model
    # Every dropout is 0 here, so training mode changes nothing but letting gradient checkpointing
    # (which acts in training mode only) bound the activations to one block's.
    model.train(settings.grad_checkpointing)
    if settings.grad_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if settings.plasticity == "grad_norm":
        ir = np.zeros(n)
        for batch in _batches(tokenizer, records, settings, settings.grad_batches):
            model.zero_grad(set_to_none=True)
            _loss(model, batch, base.device).backward()
            for block in range(n):
                ir[block] += sum(p.grad.double().pow(2).sum().item() for p in _lora_params(model, block, "lora_B"))
        return ir / settings.grad_batches
    held_out = _batches(tokenizer, records, settings, settings.grad_batches)
    train = _batches(tokenizer, records, settings, settings.loss_drop_steps,
                     offset=settings.grad_batches * settings.batch_size)
    init = {name: p.detach().clone() for name, p in model.named_parameters() if "lora_" in name}

    def held_out_loss() -> float:
        with torch.no_grad():
            return float(np.mean([_loss(model, b, base.device).item() for b in held_out]))

    before = held_out_loss()  # B = 0 everywhere: the base model's loss, the same for every block
    ir = np.zeros(n)
    for block in range(n):
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in init:
                    p.copy_(init[name])
                    p.requires_grad_(False)
        params = _lora_params(model, block)
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
        for batch in train:
            opt.zero_grad(set_to_none=True)
            _loss(model, batch, base.device).backward()
            opt.step()
        ir[block] = before - held_out_loss()
        log.info("I_r block %d/%d: loss %.4f -> %.4f", block + 1, n, before, before - ir[block])
    return ir
