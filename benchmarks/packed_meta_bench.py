"""Weight error of 8-bit HQQ metadata vs fp16 metadata on the default model (same HQQ codes).

For a sample of blocks of the prepared base model, every projection is HQQ-quantized once per
(bits, group size) at axis 0 (codes and fp16 scale/zero from HQQ's optimiser); the scale (in log2)
and zero are then stored in 8 bits per block of groups (several block sizes, and linear instead of
log2 for the scale) and the weight MSE is compared with fp16 metadata. Writes
``benchmarks/results/packed_meta_cpu.json``.

    PYTHONPATH=src python benchmarks/packed_meta_bench.py --model results/models/smollm2-135m/hf
"""

from __future__ import annotations

import argparse
import time

import torch

from autoqra.io import atomic_write_json
from autoqra.manifest import write_manifest
from autoqra.memory import hqq_meta_bytes
from autoqra.plan import PROJECTIONS, projection_module
from autoqra.quant.packed import dequantize_meta, grouped_shape, hqq_codes, quantize_meta


def weight(codes, scale, zero, shape, g, axis):
    rows, cols = grouped_shape(*shape, g, axis)
    view = (1, -1) if axis == 0 else (-1, 1)
    c = codes.view(rows, cols).float()
    return ((c - zero.float().view(view)) * scale.float().view(view)).view(shape)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="results/models/smollm2-135m/hf")
    ap.add_argument("--blocks", default="0,10,20,29")
    ap.add_argument("--bits", default="2,3,4")
    ap.add_argument("--groups", default="32,64,128")
    ap.add_argument("--meta-blocks", default="16,64,256,0", help="groups per metadata block (0 = per tensor)")
    ap.add_argument("--out", default="benchmarks/results/packed_meta_cpu.json")
    args = ap.parse_args()
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    blocks = [int(b) for b in args.blocks.split(",")]
    mblocks = [int(b) for b in args.meta_blocks.split(",")]
    rows, t0 = [], time.perf_counter()
    for bits in (int(b) for b in args.bits.split(",")):
        for g in (int(x) for x in args.groups.split(",")):
            acc: dict[str, float] = {}
            n_w = n_groups = 0
            for blk in blocks:
                for proj in PROJECTIONS:
                    w = model.get_submodule(projection_module(blk, proj)).weight.detach()
                    c = hqq_codes(w, bits, g, 0)
                    ref = weight(c["codes"], c["scale"], c["zero"], w.shape, g, 0)
                    acc["fp16"] = acc.get("fp16", 0.0) + float(((ref - w) ** 2).sum())
                    n_w, n_groups = n_w + w.numel(), n_groups + c["scale"].numel()
                    for mb in mblocks:
                        size = mb or c["scale"].numel()
                        for log in (True, False):
                            sq, sm = quantize_meta(c["scale"], log=log, block=size)
                            zq, zm = quantize_meta(c["zero"], log=False, block=size)
                            s = dequantize_meta(sq, sm, log=log, block=size)
                            z = dequantize_meta(zq, zm, log=False, block=size)
                            est = weight(c["codes"], s, z, w.shape, g, 0)
                            key = f"m8-{'log' if log else 'lin'}-b{mb or 'tensor'}"
                            acc[key] = acc.get(key, 0.0) + float(((est - w) ** 2).sum())
            base = acc["fp16"]
            row = {"bits": bits, "group_size": g, "axis": 0, "weights": n_w, "mse_fp16_meta": base / n_w,
                   "bpw_fp16_meta": bits + 8 * hqq_meta_bytes(n_groups, 16) / n_w,
                   "bpw_8bit_meta_b256": bits + 8 * hqq_meta_bytes(n_groups, 8) / n_w,
                   "mse_ratio": {k: v / base for k, v in acc.items() if k != "fp16"}}
            rows.append(row)
            print(bits, g, {k: round(v, 5) for k, v in row["mse_ratio"].items()}, flush=True)
    out = {"model": args.model, "blocks": blocks, "rows": rows, "seconds": time.perf_counter() - t0}
    atomic_write_json(args.out, out)
    write_manifest(args.out.replace(".json", ".manifest.json"), "packed_meta_bench", vars(args), seed=None)


if __name__ == "__main__":
    main()
