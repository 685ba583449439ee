"""Damage of the int8 rung by how its matmul is computed (issue 24, item 2), on SmolLM2-135M with every
projection at int8 (bitsandbytes codes: int8 per weight, one fp32 absmax per output row), before any
fine-tuning: loss increase over the 16-bit model in nats/token on held-out prose (general_heldout.jsonl,
each document cut at --doc-len tokens) and on the validation split's response tokens.

Modes: ``weight_only`` (autoqra's int8 layer: codes dequantized, activations in float), ``bnb_cpu_t0``
(bitsandbytes' own Linear8bitLt at threshold 0 as it runs on CPU in eval mode, the old layer), and two
emulations of what bitsandbytes computes on CUDA: ``cuda_w8a8`` (threshold 0: activations row-wise
int8 too) and ``cuda_llm_int8`` (threshold 6: activation columns with any |x| >= 6 stay in float).

    PYTHONPATH=src .venv/bin/python benchmarks/int8_modes_bench.py --docs 8
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from autoqra.data import load_split
from autoqra.evaluate import EvalSettings, score_model
from autoqra.io import atomic_write_json
from autoqra.manifest import build_manifest
from autoqra.models import load_model
from autoqra.plan import PROJECTIONS, projection_module
from autoqra.quant import backends


class CudaInt8Emulation(torch.nn.Module):
    """bitsandbytes' CUDA int8 matmul: outlier columns (|x| >= threshold anywhere) in float, the rest
    quantized row-wise (absmax per token) to int8; threshold 0 = no outliers (W8A8)."""

    def __init__(self, state: dict, threshold: float):
        super().__init__()
        self.w = backends.int8_dequantize(state["weight"], state["SCB"], torch.float32)
        self.threshold = threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        cols = (x2.abs() >= self.threshold).any(0) if self.threshold > 0 else torch.zeros(x2.shape[1], dtype=torch.bool)
        rest = x2.masked_fill(cols, 0.0)
        amax = rest.abs().amax(1, keepdim=True).clamp_min(1e-8)
        y = (torch.round(rest * 127 / amax) * amax / 127) @ self.w.T + x2[:, cols] @ self.w[:, cols].T
        return y.reshape(*x.shape[:-1], -1)


def bnb_threshold_layer(state: dict, threshold: float) -> torch.nn.Module:
    import bitsandbytes as bnb

    out_f, in_f = state["shape"].tolist()
    layer = bnb.nn.Linear8bitLt(in_f, out_f, bias=False, has_fp16_weights=False, threshold=threshold, device="meta")
    w = bnb.nn.Int8Params(state["weight"].clone(), requires_grad=False, has_fp16_weights=False)
    w.CB, w.SCB = w.data, state["SCB"].clone()
    layer.weight = w
    return layer


def prose_nll(model, ids: list[torch.Tensor]) -> float:
    total, n = 0.0, 0
    with torch.no_grad():
        for x in ids:
            logits = model(input_ids=x).logits[0, :-1].float()
            total += torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum").item()
            n += x.shape[1] - 1
    return total / n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="results/models/smollm2-135m/hf")
    ap.add_argument("--data", default="results/data/synth")
    ap.add_argument("--docs", type=int, default=8)
    ap.add_argument("--doc-len", type=int, default=128)
    ap.add_argument("--out", default="benchmarks/results/int8_modes.json")
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)  # a cast warning per call
    model, tok = load_model(a.model, device="cpu")
    texts = [json.loads(line)["text"] for line in open(Path(a.data) / "general_heldout.jsonl", encoding="utf-8")]
    ids = [tok(t, return_tensors="pt").input_ids[:, :a.doc_len] for t in texts[:a.docs]]
    val = load_split(a.data, "validation")
    settings = EvalSettings(batch_size=8, max_seq_len=256, metric="neg_loss")

    def measure() -> dict:
        return {"prose": prose_nll(model, ids), "validation": score_model(model, tok, val, settings)["loss"]}

    ref = measure()
    states = {(b, p): backends.bnb_quantize(model.get_submodule(projection_module(b, p)).weight.detach(), 8)
              for b in range(model.config.num_hidden_layers) for p in PROJECTIONS}
    makers = {"weight_only": lambda s: backends.bnb_layer(s, 8, "cpu", torch.float32),
              "bnb_cpu_t0": lambda s: bnb_threshold_layer(s, 0.0),
              "cuda_w8a8": lambda s: CudaInt8Emulation(s, 0.0),
              "cuda_llm_int8": lambda s: CudaInt8Emulation(s, 6.0)}
    rows = {}
    for mode, make in makers.items():
        for (b, p), state in states.items():
            parent, name = projection_module(b, p).rsplit(".", 1)
            setattr(model.get_submodule(parent), name, make(state))
        got = measure()
        rows[mode] = {k: got[k] - ref[k] for k in got}
        print(f"{mode:>14}: prose {rows[mode]['prose']:+.4f}  validation {rows[mode]['validation']:+.4f} nats/token",
              flush=True)
    out = {"reference_loss": ref, "delta_nats_per_token": rows, "prose_tokens": sum(x.shape[1] - 1 for x in ids),
           "validation_records": len(val), "manifest": build_manifest("int8_modes_bench", vars(a), 0)}
    atomic_write_json(a.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
