"""Analytic peak memory of Stage 0, from the model's shapes and the sensitivity settings alone.

Computed before anything is loaded: Stage 0 logs it, records it in its summary and refuses to start
when it exceeds what the device has free. Terms (bytes; ``d`` = bytes per element of the compute
dtype, bf16 on CUDA and fp32 on CPU; T = tokens of one batch; L = its sequence length):

- weights: every parameter in ``d`` bytes; the low-bit probe copy of all blocks as the memory
  model charges it (packed weights + quantization metadata);
- fidelity (no grad, one calibration batch): every block's input and two final hidden states
  (blocks·T·H·d + 2·T·H·d), one block's forward transients (q/k/v/o, MLP, one dequantized
  projection, attention scores where the kernel materialises them) and the chunked logits
  (``LOGIT_TEMPS`` fp32 arrays of chunk × vocab);
- plasticity (forward + backward of one ``batch_size × max_seq_len`` batch): activations saved for
  backward per block and token (all blocks, or only block inputs plus one block's with gradient
  checkpointing), fp32 LoRA inputs where the base is 16-bit (peft casts them), rank-``r_max``
  adapters with gradients, and the fp32 logits of the loss with their gradient.

Attention scores (B·heads·L² per block) count only on CPU, where SDPA runs the math kernel; on
CUDA the fused kernels keep them in on-chip memory. The estimate is an upper bound by design
(activations are counted as if all lived at once).
"""

from __future__ import annotations

import os
from typing import Any

from autoqra.errors import ConfigError
from autoqra.memory import MemoryModel, ModelShape
from autoqra.plan import DEFAULT_HQQ_AXIS
from autoqra.sensitivity.fidelity import logit_chunk_tokens
from autoqra.sensitivity.settings import SensitivitySettings

GB = 1e9
LOGIT_TEMPS = 8  # fp32 chunk × vocab arrays alive at once in the chunked JSD (head outputs, log-probs, terms)
CUDA_OVERHEAD = 2**30  # CUDA context and allocator slack, outside torch's own accounting


def _block_forward(shape: ModelShape, tokens: int, batch: int, seq: int, d: int, math_attention: bool) -> float:
    """Transient bytes of one block's forward (no grad)."""
    h, i = shape.hidden_size, shape.intermediate_size
    q_out, kv_out = shape.n_heads * shape.head_dim, shape.n_kv_heads * shape.head_dim
    largest = max(p.numel for p in shape.projections())
    scores = batch * shape.n_heads * seq * seq * d * 2 if math_attention else 0
    return tokens * (3 * h + 2 * q_out + 2 * kv_out + 3 * i) * d + largest * d + scores


def _saved_per_token(shape: ModelShape, d: int, r_max: int) -> float:
    """Bytes one block saves for backward per token (norms, q/k/v with RoPE, attention output, MLP, LoRA)."""
    h, i = shape.hidden_size, shape.intermediate_size
    q_out, kv_out = shape.n_heads * shape.head_dim, shape.n_kv_heads * shape.head_dim
    acts = (6 * h + 3 * q_out + 4 * kv_out + 4 * i) * d
    cast = 0 if d == 4 else (5 * h + q_out + i) * 4  # peft upcasts a 16-bit input to the fp32 adapters
    return acts + cast + 7 * r_max * 4


def stage0_footprint(shape: ModelShape, settings: SensitivitySettings, quantizer: str, group_size: int,
                     device: str, hqq_axis: int = DEFAULT_HQQ_AXIS, meta_bits: int = 16) -> dict[str, Any]:
    """Peak bytes of Stage 0 on ``device`` ("cuda..." or "cpu"), by part and phase."""
    cuda = str(device).startswith("cuda")
    d = 2 if cuda else 4  # autoqra.models.resolve_dtype: bf16 on CUDA, fp32 on CPU
    n, h, v = shape.n_blocks, shape.hidden_size, shape.vocab_size
    params = n * shape.block_weight_params + sum(shape.fixed_params.values())
    weights = params * d
    low = MemoryModel(shape, None, group_size, hqq_axis, meta_bits).block_cost(settings.resolved_low_bits, 0, quantizer)
    probe = n * (low["weights"] + low["quant_meta"])

    b, seq = settings.calib_batch_size, settings.calib_len
    t = b * seq
    chunk = min(t, logit_chunk_tokens(v))
    fidelity = {
        "weights": weights, "low_bit_probe": probe,
        "block_inputs": (n + 2) * t * h * d,
        "block_forward": _block_forward(shape, t, b, seq, d, not cuda),
        "logit_chunks": LOGIT_TEMPS * chunk * v * 4,
    }
    bp, sp = settings.batch_size, settings.max_seq_len
    tp = bp * sp
    per_token = _saved_per_token(shape, d, settings.r_max)
    scores = bp * shape.n_heads * sp * sp * d * 2 if not cuda else 0
    if settings.grad_checkpointing:  # block inputs kept, one block's activations live at a time
        saved = n * tp * h * d + tp * per_token + scores
    else:
        saved = n * (tp * per_token + scores)
    lora = n * shape.lora_params_per_rank * settings.r_max * 4
    plasticity = {
        "weights": weights, "lora_and_grads": 2 * lora + (2 * lora // n if settings.plasticity == "loss_drop" else 0),
        "activations": saved,
        "backward": _block_forward(shape, tp, bp, sp, d, not cuda),
        "logits": tp * v * (3 * 4 + d),
    }
    overhead = CUDA_OVERHEAD if cuda else 0
    phases = {"fidelity": sum(fidelity.values()) + overhead, "plasticity": sum(plasticity.values()) + overhead}
    peak = max(phases.values())
    return {"device": "cuda" if cuda else "cpu", "bytes_per_element": d, "overhead": overhead,
            "fidelity": fidelity, "plasticity": plasticity, "phases": phases,
            "peak_bytes": peak, "peak_gb": round(peak / GB, 3), "logit_chunk_tokens": chunk}


def device_free_bytes(device: str) -> tuple[float, str]:
    """Memory Stage 0 may use on ``device``: free GPU memory, or MemAvailable on the host."""
    if str(device).startswith("cuda"):
        import torch

        dev = torch.device(device)
        free, _ = torch.cuda.mem_get_info(dev)
        return float(free), f"free on {torch.cuda.get_device_name(dev)}"
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            kb = next(int(line.split()[1]) for line in fh if line.startswith("MemAvailable:"))
        return kb * 1024.0, "available host memory"
    except (OSError, StopIteration, ValueError):
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")), "free host memory"


def check_fits(footprint: dict[str, Any], free: float, where: str, settings: SensitivitySettings) -> None:
    """ConfigError naming the sensitivity keys when the estimated peak exceeds ``free`` bytes."""
    if footprint["peak_bytes"] <= free:
        return
    ph = footprint["phases"]
    raise ConfigError(
        f"sensitivity: Stage 0 needs about {footprint['peak_bytes'] / GB:.1f} GB on {footprint['device']} but only "
        f"{free / GB:.1f} GB are {where}. Fidelity probes {ph['fidelity'] / GB:.1f} GB: calibration batches of "
        f"sensitivity.calib_batch_size={settings.calib_batch_size} x sensitivity.calib_len={settings.calib_len} "
        f"tokens; plasticity {ph['plasticity'] / GB:.1f} GB: sensitivity.batch_size={settings.batch_size} x "
        f"data.max_seq_len={settings.max_seq_len} tokens at sensitivity.r_max={settings.r_max}, "
        f"sensitivity.grad_checkpointing={settings.grad_checkpointing}. Lower those keys (or turn on "
        "grad_checkpointing); sensitivity.n_calib and grad_batches do not change the peak.")
