"""Training memory: what a LoRA run holds, measured (tensors held, activations autograd saves).

The prediction of the same quantity from the plan lives beside it in :func:`predict_training_peak`.
"""

from __future__ import annotations

from typing import Any

import torch

from autoqra.quant.backends import INT8_LAYERS


def held_tensor_bytes(model: Any, optimizer: torch.optim.Optimizer | None = None) -> int:
    """Bytes of every tensor the model holds (parameters, buffers, grads, HQQ/bnb quantization
    metadata that lives outside ``parameters()``, wherever bitsandbytes moved it) plus optimizer state;
    shared storage counted once."""
    seen: set[int] = set()
    total = 0

    def add(t: Any) -> None:
        nonlocal total
        if not isinstance(t, torch.Tensor) or t.device.type == "meta":
            return
        storage = t.untyped_storage()
        if storage.data_ptr() in seen:
            return
        seen.add(storage.data_ptr())
        total += storage.nbytes()

    for p in model.parameters():
        add(p)
        add(p.grad)
        qs = getattr(p, "quant_state", None)  # bnb Params4bit keeps absmax/code/offset here
        if qs is not None:
            state2 = getattr(qs, "state2", None)  # absent after bnb's CPU repack (QuantState raises, not None)
            for t in (qs.absmax, qs.code, getattr(qs, "offset", None), getattr(state2, "absmax", None),
                      getattr(state2, "code", None)):
                add(t)
        add(getattr(p, "SCB", None))  # bnb int8 row scales, until the layer's first forward
    for b in model.buffers():
        add(b)
    for m in model.modules():
        meta = getattr(m, "meta", None)  # HQQLinear keeps scale/zero in a plain dict
        if isinstance(meta, dict):
            for v in meta.values():
                add(v)
        if type(m).__name__ in INT8_LAYERS and hasattr(m, "state"):
            # after its first forward, the layer keeps its int8 codes and row scales here
            add(getattr(m.state, "CB", None))
            add(getattr(m.state, "SCB", None))
    if optimizer is not None:
        for state in optimizer.state.values():
            for v in state.values():
                add(v)
    return total


class SavedActivations:
    """Counts the bytes autograd saves for backward (distinct storages, ``held`` ones excluded)."""

    def __init__(self, held: set[int]):
        self.held, self.seen, self.bytes, self.peak = held, set(), 0, 0

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        if t.device.type != "meta":
            st = t.untyped_storage()
            ptr = st.data_ptr()
            if ptr not in self.seen and ptr not in self.held:
                self.seen.add(ptr)
                self.bytes += st.nbytes()
        return t

    def forward_done(self) -> None:
        self.peak = max(self.peak, self.bytes)
        self.seen, self.bytes = set(), 0

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)


def storage_ptrs(model: Any) -> set[int]:
    ts = [*model.parameters(), *model.buffers()]
    for m in model.modules():
        meta = getattr(m, "meta", None)
        if isinstance(meta, dict):
            ts += [v for v in meta.values() if isinstance(v, torch.Tensor)]
    return {t.untyped_storage().data_ptr() for t in ts if t.device.type != "meta"}


def activation_elements_per_token(shape: Any, lora_ranks: int, seq_len: int, lora_dropout: bool,
                                   hqq: bool = False) -> dict[str, int]:
    """Elements autograd saves per token for one block of a Llama-style decoder with LoRA on its seven
    projections (frozen base weights save nothing; ``lora_ranks`` = Σ of the seven ranks), counted
    from what the forward keeps for backward:

    - two RMSNorms: input + reciprocal RMS each (2h + 2);
    - attention (SDPA): q, k, v (GQA keys/values expanded to every head), the output, the
      log-sum-exp per head and the (B, 1, T, T) mask: 4·a + heads + T, with a = heads·head_dim;
    - SwiGLU MLP: gate and up outputs and silu(gate): 3i;
    - LoRA: each A output (Σ r); with dropout each projection keeps its dropout mask and output
      (2·in each: 10h + 2a + 2i), without it the A inputs are the shared block inputs (2h + a + i);
    - hqq's own HQQLinear (``hqq``) keeps its input for the backward dequantization: with dropout these
      are extra tensors (2h + a + i), without it they are the LoRA inputs already counted. autoqra
      stores HQQ codes in :class:`~autoqra.quant.packed.PackedLinear`, whose backward keeps nothing, so
      :func:`predict_training_peak` passes ``hqq=False``.
    """
    h, i = shape.hidden_size, shape.intermediate_size
    a = shape.n_heads * shape.head_dim
    lora_in = (10 * h + 2 * a + 2 * i) if lora_dropout else (2 * h + a + i)
    return {"norms": 2 * h + 2, "attention": 4 * a + shape.n_heads + seq_len, "mlp": 3 * i,
            "lora": lora_in + lora_ranks, "hqq_inputs": (2 * h + a + i) if hqq and lora_dropout else 0}


def predict_training_peak(shape: Any, plan: Any, *, batch_size: int, seq_len: int, logit_len: int,
                          lora_dropout: bool, dense_bytes: int = 2, act_bytes: int = 2,
                          grad_checkpointing: bool = False) -> dict[str, float]:
    """Predicted peak bytes of LoRA training ``plan`` (an autoqra.plan.Plan) on a model of ``shape``
    (an autoqra.memory.ModelShape): one micro-batch of ``batch_size`` × ``seq_len`` tokens (padded)
    whose loss needs logits at ``logit_len`` positions per sequence.

    weights = quantized projections as stored (the memory model, exact) + dense blocks and the fixed
    part at ``dense_bytes`` per weight (4 on CPU: float32); LoRA parameters, their gradients and
    AdamW's two moments in float32 (16 bytes per adapter parameter); activations =
    tokens × Σ_blocks :func:`activation_elements_per_token` (less the first block's input norm, whose
    input, the embedding, needs no gradient) + the final norm (h + 1 per token), at ``act_bytes``
    per element, + the float32 log-softmax of the logits (vocab per predicting position).
    With gradient checkpointing only each block's input (h per token) is kept, plus one block's
    activations while it is recomputed.
    """
    from autoqra.memory import MemoryModel

    mm = MemoryModel.for_plan(shape, plan)
    quantized = dense = 0.0
    for b, r, q in zip(plan.bits, plan.ranks, plan.quantizers, strict=True):
        if q == "none":
            dense += shape.block_weight_params * dense_bytes
        else:
            c = mm.block_cost(b, r, q)
            quantized += c["weights"] + c["quant_meta"]
    fixed = sum(shape.fixed_params.values()) * dense_bytes
    n_lora = sum(shape.lora_params_per_rank * r for r in plan.ranks)
    tokens = batch_size * seq_len
    per_block = [sum(activation_elements_per_token(shape, 7 * r, seq_len, lora_dropout).values())
                 for r in plan.ranks]  # PackedLinear saves no input for backward
    if grad_checkpointing:
        block_acts = tokens * (shape.hidden_size * shape.n_blocks + max(per_block))
    else:
        block_acts = tokens * (sum(per_block) - shape.hidden_size - 1)
    head = tokens * (shape.hidden_size + 1)
    logits = 4 * batch_size * max(0, logit_len - 1) * shape.vocab_size
    out = {"weights": quantized + dense + fixed, "lora": 4.0 * n_lora, "lora_grads": 4.0 * n_lora,
           "adamw_state": 8.0 * n_lora, "activations": float(act_bytes * (block_acts + head) + logits)}
    out["total"] = sum(out.values())
    return out
