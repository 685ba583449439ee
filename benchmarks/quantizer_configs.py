"""The configurations of benchmarks/quantizer_bench.py and how each one is quantized and counted.

A configuration is (quantizer, rung bits, group size, metadata bits, HQQ axis 0):

- ``hqq``: HQQ's codes packed exactly (``autoqra.quant``, issue #22), scale and zero in ``meta_bits``;
- ``hqq028``: HQQ 0.2.8's own layout (3-bit codes ten to an int32, padded), fp16 scale and zero;
- ``nf4`` (bitsandbytes NF4, double quantization) at 4 bits, ``int8`` (LLM.int8) at 8.

:func:`quantized_projections` returns the bytes really stored by the projections' tensors, the
memory model's prediction of them, and the dequantized weights (or, for int8, a model with the real
layers) that the bench scores.
"""

from __future__ import annotations

import hashlib
import math

import torch

from autoqra.memory import MemoryModel, ModelShape, ProjectionShape, hqq_grid, hqq_layout_error
from autoqra.plan import PROJECTIONS, Plan, projection_module
from autoqra.quant.backends import make_layer, quantize, stored_bytes
from autoqra.quant.build import quantize_base

HQQ_BITS = (2, 3, 4, 8)
AXIS = 0  # measured against axis 1 by the #16 bench (benchmarks/results/quantizer_bench.json before #22)
# HQQ 0.2.8's packing: values per storage word and bytes per word along the first axis of the grouped view
HQQ028_PACKING = {2: (4, 1), 3: (10, 4), 4: (2, 1), 8: (1, 1)}


def configurations(groups: list[int], meta_bits: list[int]) -> list[dict]:
    """Every configuration, in the order the bench measures them (HQQ 0.2.8 first: the packed
    configurations at 16-bit metadata reconstruct the same weights and reuse its losses)."""
    out = [{"quantizer": "hqq028", "bits": b, "group_size": g, "meta_bits": 16} for g in groups for b in HQQ_BITS]
    out += [{"quantizer": "nf4", "bits": 4, "group_size": 64, "meta_bits": None},
            {"quantizer": "int8", "bits": 8, "group_size": None, "meta_bits": None}]
    out += [{"quantizer": "hqq", "bits": b, "group_size": g, "meta_bits": m}
            for m in meta_bits for g in groups for b in HQQ_BITS]
    for c in out:
        c["hqq_axis"] = AXIS if c["quantizer"].startswith("hqq") else None
        c["name"] = config_name(c)
        c["key"] = f"{c['name']}-b{c['bits']}"
    return out


def config_name(c: dict) -> str:
    if c["quantizer"] == "hqq":
        return f"hqq-g{c['group_size']}-m{c['meta_bits']}"
    if c["quantizer"] == "hqq028":
        return f"hqq028-g{c['group_size']}"
    return c["quantizer"]


def hqq028_bytes(proj: ProjectionShape, bits: int, group_size: int, axis: int) -> int:
    """Bytes HQQ 0.2.8 stores for one projection (codes padded along the packed axis + fp16 scale, zero)."""
    rows, cols = hqq_grid(proj.numel, group_size, axis)
    per_word, word_bytes = HQQ028_PACKING[bits]
    return math.ceil(rows / per_word) * cols * word_bytes + math.ceil(proj.numel / group_size) * 2 * 2


def fingerprint(weights: dict[str, torch.Tensor]) -> str:
    """sha256 of the dequantized weights (bit-identical weights: the same quantized model)."""
    h = hashlib.sha256()
    for path in sorted(weights):
        h.update(path.encode())
        h.update(weights[path].detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


def _hqq_state(base, cache, bits: int, g: int, block: int, proj: str) -> dict:
    w = base.model.get_submodule(projection_module(block, proj)).weight
    return cache.get_or_create("hqq", g, AXIS, bits, block, proj,
                               lambda: quantize(w.detach(), "hqq", bits, g, AXIS))


def _packed(base, shape: ModelShape, cfg: dict, cache) -> dict:
    """Packed HQQ (issue #22's layer): stored bytes, memory model, dequantized weights."""
    from autoqra.quant.packed import (  # the #22 API
        pack_hqq_state,
        packed_layer,
        packed_stored_bytes,
    )

    bits, g, m = cfg["bits"], cfg["group_size"], cfg["meta_bits"]
    tot = {"weights": 0, "quant_meta": 0}
    dense = {}
    for block in range(shape.n_blocks):
        for proj in PROJECTIONS:
            state = pack_hqq_state(_hqq_state(base, cache, bits, g, block, proj), meta_bits=m)
            layer = packed_layer(state, "cpu", torch.float32)
            sb = packed_stored_bytes(layer)
            tot["weights"] += int(sb["weights"])
            tot["quant_meta"] += int(sb["quant_meta"])
            dense[projection_module(block, proj)] = layer.dequantize().float()
    mm = MemoryModel(shape, {bits: "hqq"}, g, AXIS, meta_bits=m)
    cost = mm.block_cost(bits, 1, "hqq")
    return {**tot, "predicted": int(shape.n_blocks * (cost["weights"] + cost["quant_meta"])), "dense": dense}


def real_model(base, shape: ModelShape, cfg: dict, cache):
    """The model with the configuration's real HQQ layers (to check the dequantized eval path)."""
    plan = Plan.uniform(shape.n_blocks, cfg["bits"], 1, "hqq", cfg["group_size"], AXIS)
    return quantize_base(base, plan, cache)


def quantized_projections(base, shape: ModelShape, cfg: dict, cache) -> dict:
    """``{weights, quant_meta, predicted, dense | model, fingerprint}`` of one configuration, or
    ``{"skip": reason}`` when the model's shapes do not allow it."""
    q, bits, g = cfg["quantizer"], cfg["bits"], cfg["group_size"]
    if q.startswith("hqq"):
        errs = [e for p in shape.projections() if (e := hqq_layout_error(p, bits, g, AXIS))]
        if errs:
            return {"skip": errs[0]}
    if q == "hqq":
        out = _packed(base, shape, cfg, cache)
        out["fingerprint"] = fingerprint(out["dense"])
        return out
    if q == "int8":  # activations are quantized too: score the real layers
        plan = Plan.uniform(shape.n_blocks, 8, 1, "int8", 64, AXIS)
        model = quantize_base(base, plan, cache)
        tot = {"weights": 0, "quant_meta": 0}
        for block in range(shape.n_blocks):
            for proj in PROJECTIONS:
                sb = stored_bytes(model.get_submodule(projection_module(block, proj)))
                tot = {k: tot[k] + int(sb[k]) for k in tot}
        cost = MemoryModel(shape, {8: "int8"}).block_cost(8, 1, "int8")
        return {**tot, "predicted": int(shape.n_blocks * (cost["weights"] + cost["quant_meta"])), "model": model}
    tot = {"weights": 0, "quant_meta": 0}
    dense = {}
    predicted = 0
    for block in range(shape.n_blocks):
        for proj in PROJECTIONS:
            path = projection_module(block, proj)
            if q == "hqq028":
                state = _hqq_state(base, cache, bits, g, block, proj)
                layer = make_layer(state, "hqq", bits, "cpu", torch.float32)
                dense[path] = layer.dequantize().float().reshape(base.model.get_submodule(path).weight.shape)
            else:  # nf4
                import bitsandbytes as bnb

                w = base.model.get_submodule(path).weight
                state = cache.get_or_create("nf4", 64, AXIS, 4, block, proj, lambda w=w: quantize(w.detach(), "nf4", 4, 64, 0))
                layer = make_layer(state, "nf4", 4, "cpu", torch.float32)
                dense[path] = bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state).float()
            sb = stored_bytes(layer)
            tot = {k: tot[k] + int(sb[k]) for k in tot}
    for p in shape.projections():
        if q == "hqq028":
            predicted += hqq028_bytes(p, bits, g, AXIS)
        else:
            from autoqra.memory import weight_bytes

            predicted += int(sum(weight_bytes(p, 4, "nf4", 64)))
    return {**tot, "predicted": predicted * shape.n_blocks, "dense": dense,
            "fingerprint": fingerprint(dense) if q == "hqq028" else None}
