"""Forward + backward of a LoRA-wrapped exactly packed HQQ layer (autoqra.quant.packed) vs the
LoRA-wrapped HQQLinear it replaces (hqq 0.2.8, PYTORCH backend, fp16 metadata) and a dense layer,
at SmolLM2-135M's projection shapes; one thread on CPU, or the GPU when one is there.

    PYTHONPATH=src python benchmarks/packed_speed.py              # CPU, needs hqq and peft
    PYTHONPATH=src python benchmarks/packed_speed.py --device cuda --no-hqq   # GPU without hqq

Writes ``benchmarks/results/packed_speed_<device>.json`` (median ms per step; ratio to HQQ).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from autoqra.io import atomic_write_json
from autoqra.manifest import write_manifest
from autoqra.quant.packed import PackedLinear, state_from_codes

SHAPES = ((576, 576), (1536, 576), (576, 1536))  # (out, in): attention, gate/up, down


def _codes(out_f: int, in_f: int, bits: int, g: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Random codes and plausible metadata (timing does not depend on HQQ's optimiser)."""
    n = out_f * in_f
    return {"codes": torch.randint(0, 1 << bits, (n,), generator=gen, dtype=torch.uint8),
            "scale": (torch.rand(n // g, generator=gen) * 0.01 + 0.001).half(),
            "zero": (torch.rand(n // g, generator=gen) * (2 ** bits - 1)).half()}


def _hqq_layer(w: torch.Tensor, bits: int, g: int, dtype: torch.dtype, device: str) -> torch.nn.Module:
    from hqq.core.quantize import BaseQuantizeConfig, HQQBackend, HQQLinear

    HQQLinear.set_backend(HQQBackend.PYTORCH)
    lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
    lin.weight.data.copy_(w)
    layer = HQQLinear(lin, BaseQuantizeConfig(nbits=bits, group_size=g, axis=0), compute_dtype=dtype, device=device)
    for k in ("scale", "zero"):  # as autoqra stored them before: fp16 (the matmul promotes)
        layer.meta[k] = layer.meta[k].to(torch.float16 if dtype == torch.float32 else dtype)
    return layer


def _wrap(layer: torch.nn.Module, rank: int) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    from autoqra.quant.packed_lora import register

    net = torch.nn.Sequential()
    net.add_module("proj", layer)
    net.register_parameter("frozen", torch.nn.Parameter(torch.zeros(1), requires_grad=False))
    return get_peft_model(net, register(LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.05,
                                                   target_modules=["proj"])))


def _time(models: dict[str, torch.nn.Module], x: torch.Tensor, reps: int, sync) -> dict[str, float]:
    """Median ms of one forward + backward per model, the models interleaved rep by rep so that
    load from other processes hits them alike."""
    def step(model):
        model(x).float().pow(2).mean().backward()

    for model in models.values():
        for _ in range(3):
            step(model)
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(reps):
        for k, model in models.items():
            sync()
            t = time.perf_counter()
            step(model)
            sync()
            times[k].append(time.perf_counter() - t)
    return {f"{k}_ms": 1e3 * statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tokens", type=int, default=512, help="tokens per step (batch x sequence)")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--bits", default="2,3,4,8")
    ap.add_argument("--group-size", type=int, default=64)
    ap.add_argument("--no-hqq", action="store_true", help="skip the HQQLinear reference (hqq not installed)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cuda = args.device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for bits in (int(b) for b in args.bits.split(",")):
        for out_f, in_f in SHAPES:
            x = torch.randn(args.tokens, in_f, generator=gen).to(args.device, dtype).requires_grad_()
            c = _codes(out_f, in_f, bits, args.group_size, gen)
            row = {"bits": bits, "shape": [out_f, in_f]}
            models = {}
            for mb in (16, 8):
                state = state_from_codes(c, bits, args.group_size, 0, mb, (out_f, in_f))
                layer = PackedLinear(state, device=args.device, compute_dtype=dtype)
                models[f"packed_m{mb}"] = _wrap(layer, args.rank)
                w = layer.dequantize(torch.float32).cpu()
            dense = torch.nn.Linear(in_f, out_f, bias=False).to(args.device, dtype).requires_grad_(False)
            models["dense"] = _wrap(dense, args.rank)
            if not args.no_hqq:
                models["hqq"] = _wrap(_hqq_layer(w, bits, args.group_size, dtype, args.device), args.rank)
            row.update(_time(models, x, args.reps, sync))
            if not args.no_hqq:
                row["ratio_packed_m16_to_hqq"] = row["packed_m16_ms"] / row["hqq_ms"]
                row["ratio_packed_m8_to_hqq"] = row["packed_m8_ms"] / row["hqq_ms"]
            rows.append(row)
            print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    device = torch.cuda.get_device_name() if cuda else "cpu (1 thread)"
    out = args.out or f"benchmarks/results/packed_speed_{'gpu' if cuda else 'cpu'}.json"
    summary = {k: statistics.mean(r[k] for r in rows) for k in ("ratio_packed_m16_to_hqq", "ratio_packed_m8_to_hqq")
               if all(k in r for r in rows)}
    atomic_write_json(out, {"device": device, "dtype": str(dtype), "tokens": args.tokens, "rank": args.rank,
                            "group_size": args.group_size, "axis": 0, "reps": args.reps, "rows": rows,
                            "mean_ratios": summary})
    write_manifest(out.replace(".json", ".manifest.json"), "packed_speed", vars(args), seed=0)


if __name__ == "__main__":
    main()
