"""``I_q(ℓ)``: mean per-token Jensen–Shannon divergence (nats) between the 16-bit model's next-token
distribution and that of the model with block ℓ alone at the lowest bit-width, on calibration text.

Memory is bounded by one calibration batch, never by the whole calibration set (at paper scale,
128 × 2048 tokens × a 150k vocabulary would be 159 GB of fp32 log-probs):

- batches are the outer loop; for each batch the 16-bit reference keeps only its *final hidden
  states* (tokens × hidden) and every block's input (blocks × tokens × hidden), and both are
  dropped before the next batch;
- logits (tokens × vocab) are never held for a whole batch: the LM head is applied to chunks of
  ``logit_chunk_tokens`` positions, reference and probe alike, and the JSD is summed chunk by chunk;
- the quantized probe is one structural copy of the base with every block at low bits (sharing
  embeddings, norms and head); probing block ℓ runs block ℓ from that copy and every other block
  from the base, so it is exactly "block ℓ alone at low bits".
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch

from autoqra.errors import ModelError
from autoqra.plan import DEFAULT_HQQ_AXIS, Plan
from autoqra.quant.build import BaseModel, quantize_base
from autoqra.quant.cache import QuantCache
from autoqra.sensitivity.settings import SensitivitySettings, calibration_ids

log = logging.getLogger(__name__)

LOGIT_CHUNK_BYTES = 128 * 2**20  # fp32 logits of one chunk of positions (a few such arrays live at once)


def logit_chunk_tokens(vocab_size: int) -> int:
    """Positions whose fp32 logits fit in :data:`LOGIT_CHUNK_BYTES`."""
    return max(1, LOGIT_CHUNK_BYTES // (4 * int(vocab_size)))


def probe_plan(n_blocks: int, low_bits: int, quantizer: str, group_size: int,
               hqq_axis: int = DEFAULT_HQQ_AXIS, meta_bits: int = 16) -> Plan:
    """The quantized probe: every block at ``low_bits`` with the lowest rung's quantizer (each probe
    swaps one of them into the base)."""
    return Plan.uniform(n_blocks, low_bits, 1, quantizer, group_size, hqq_axis, meta_bits)


def jsd_from_logits(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-position Jensen–Shannon divergence (nats, in [0, ln 2]) between softmax(a) and softmax(b)."""
    return _jsd_logp(torch.log_softmax(a.float(), -1), torch.log_softmax(b.float(), -1))


def _jsd_logp(lp: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    # log M = log(½(P+Q)) in log space: no underflow for tokens either model finds improbable.
    lm = torch.logaddexp(lp, lq) - math.log(2.0)
    kl_pm = (lp.exp() * (lp - lm)).sum(-1)
    kl_qm = (lq.exp() * (lq - lm)).sum(-1)
    return (0.5 * (kl_pm + kl_qm)).clamp(0.0, math.log(2.0))  # clamp rounding only


def jsd_sum(head: Any, ref_hidden: torch.Tensor, hidden: torch.Tensor, chunk: int) -> float:
    """Σ over positions of JSD(softmax(head(ref)), softmax(head(hidden))), ``chunk`` positions at a time."""
    a, b = ref_hidden.reshape(-1, ref_hidden.shape[-1]), hidden.reshape(-1, hidden.shape[-1])
    total = 0.0
    for s in range(0, a.shape[0], chunk):
        lp = torch.log_softmax(head(a[s:s + chunk]).float(), -1)
        lq = torch.log_softmax(head(b[s:s + chunk]).float(), -1)
        total += _jsd_logp(lp, lq).double().sum().item()
    return total


def _inner(model: Any) -> Any:
    return model.get_submodule("model")  # the LlamaModel/Qwen*Model inside the CausalLM


def run_layers(model: Any, layers: list, *, input_ids: torch.Tensor | None = None,
               hidden: torch.Tensor | None = None) -> torch.Tensor:
    """Final hidden states (after the last norm) of ``model``'s decoder run with ``layers`` instead of
    its own, from token ids or from a block's input hidden states (a structural copy is modified
    for the call and restored)."""
    inner = _inner(model)
    own = inner.layers
    inner.layers = torch.nn.ModuleList(layers)
    try:
        kw = {"input_ids": input_ids} if hidden is None else {"inputs_embeds": hidden}
        return inner(**kw, use_cache=False).last_hidden_state
    finally:
        inner.layers = own


@torch.no_grad()
def reference(model: Any, ids: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The 16-bit model on one batch: final hidden states and every block's input hidden states."""
    seen: list[torch.Tensor] = []
    hooks = [layer.register_forward_pre_hook(
        lambda _m, args, kwargs: seen.append(args[0] if args else kwargs["hidden_states"]), with_kwargs=True)
        for layer in _inner(model).layers]
    try:
        final = _inner(model)(input_ids=ids, use_cache=False).last_hidden_state
    finally:
        for h in hooks:
            h.remove()
    return final, seen


@torch.no_grad()
def check_head(model: Any, ids: torch.Tensor) -> None:
    """Stage 0 takes logits as ``lm_head(final hidden)``; fail if this model transforms them further."""
    short = ids[:1, : min(16, ids.shape[1])]
    full = model(input_ids=short, use_cache=False).logits.float()
    mine = model.get_output_embeddings()(_inner(model)(input_ids=short, use_cache=False).last_hidden_state).float()
    if not torch.allclose(full, mine, rtol=1e-3, atol=1e-3):
        raise ModelError(f"sensitivity: {type(model).__name__}'s logits are not lm_head(final hidden state) "
                         "(e.g. logit scaling or soft-capping); Stage 0 supports Llama/Qwen-style models")


@torch.no_grad()
def fidelity_sensitivity(base: BaseModel, cache: QuantCache, settings: SensitivitySettings, quantizer: str,
                         group_size: int, calib: torch.Tensor | None = None,
                         records: list[dict] | None = None, hqq_axis: int = DEFAULT_HQQ_AXIS,
                         meta_bits: int = 16) -> np.ndarray:
    """Raw ``I_q``: mean per-token JSD between the 16-bit base and the base with block ℓ alone at low bits.

    Blocks before ℓ are identical in both models, so each probe starts from block ℓ's input
    (about half the compute); this shortcut is checked on the first batch against the base and
    dropped if it does not reproduce it (e.g. per-layer attention types it would misalign).
    """
    if quantizer == "none":  # a 16-bit-only search has no quantizer to probe with
        raise ValueError("sensitivity: quantizer 'none' does not quantize; the lowest rung needs hqq, nf4 or int8")
    low = settings.resolved_low_bits
    if calib is None:
        calib = calibration_ids(base.tokenizer, settings, records)
    bs, n, dev = settings.calib_batch_size, base.n_blocks, base.device
    probe = quantize_base(base, probe_plan(n, low, quantizer, group_size, hqq_axis, meta_bits), cache)
    low_layers, base_layers = list(_inner(probe).layers), list(_inner(base.model).layers)
    head = base.model.get_output_embeddings()
    chunk = logit_chunk_tokens(head.weight.shape[0])
    uniform_layers = len(set(getattr(base.model.config, "layer_types", None) or ["one"])) == 1
    check_head(base.model, calib[:1].to(dev))
    total, count, shortcut = np.zeros(n), 0, None
    n_batches = math.ceil(len(calib) / bs)
    for j, i in enumerate(range(0, len(calib), bs)):
        ids = calib[i:i + bs].to(dev)
        ref, inputs = reference(base.model, ids)
        if shortcut is None:  # the 16-bit model run from block n//2 must reproduce the reference
            same = run_layers(probe, base_layers[n // 2:], hidden=inputs[n // 2])
            shortcut = uniform_layers and jsd_sum(head, ref, same, chunk) / ids.numel() < 1e-7
            del same
            log.info("I_q: %d blocks at %d-bit, %d calibration tokens in batches of %d, logits in chunks of "
                     "%d positions, probes start at block ℓ: %s", n, low, calib.numel(), bs, chunk, shortcut)
        for block in range(n):
            if shortcut:
                out = run_layers(probe, [low_layers[block], *base_layers[block + 1:]], hidden=inputs[block])
            else:
                layers = [*base_layers[:block], low_layers[block], *base_layers[block + 1:]]
                out = run_layers(probe, layers, input_ids=ids)
            total[block] += jsd_sum(head, ref, out, chunk)
            del out
        count += ids.numel()
        del ref, inputs
        log.info("I_q batch %d/%d done", j + 1, n_batches)
    iq = total / count
    for block in range(n):
        log.info("I_q block %d/%d: %.5f", block + 1, n, iq[block])
    return iq
