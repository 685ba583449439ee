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

import copy
import hashlib
import math
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from autoqra.memory import MemoryModel, ModelShape, ProjectionShape, hqq_grid, hqq_layout_error
from autoqra.plan import PROJECTIONS, Plan, projection_module
from autoqra.quant.backends import dequantized_weight, make_layer, quantize, stored_bytes
from autoqra.quant.build import quantize_base

HQQ_BITS = (2, 3, 4, 8)
AXIS = 0  # measured against axis 1 by the #16 bench (benchmarks/results/quantizer_bench.json before #22)
# HQQ 0.2.8's packing: values per storage word and bytes per word along the first axis of the grouped view
HQQ028_PACKING = {2: (4, 1), 3: (10, 4), 4: (2, 1), 8: (1, 1)}


def configurations(groups: list[int], meta_bits: list[int]) -> list[dict]:
    """Every configuration, in the order the bench measures them: per (group, rung) HQQ 0.2.8's
    layout first (the packed configuration at 16-bit metadata reconstructs the same weights and
    reuses its losses), then the packed ones; bitsandbytes last."""
    out = []
    for g in groups:
        for b in HQQ_BITS:
            out.append({"quantizer": "hqq028", "bits": b, "group_size": g, "meta_bits": 16})
            out += [{"quantizer": "hqq", "bits": b, "group_size": g, "meta_bits": m} for m in meta_bits]
    out += [{"quantizer": "nf4", "bits": 4, "group_size": 64, "meta_bits": None},
            {"quantizer": "int8", "bits": 8, "group_size": None, "meta_bits": None}]
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


def hqq028_state(base, cache, bits: int, g: int, block: int, proj: str) -> dict[str, torch.Tensor]:
    """HQQLinear's state (hqq 0.2.8 layout, fp16 scale/zero), cached in the pre-#22 cache layout."""
    path = Path(cache.root) / f"hqq-g{g}-a{AXIS}-b{bits}-v1" / f"{block}.{proj}.safetensors"
    if path.is_file():
        return load_file(str(path))
    from hqq.core.quantize import BaseQuantizeConfig, HQQLinear

    w = base.model.get_submodule(projection_module(block, proj)).weight
    lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
    with torch.no_grad():
        lin.weight.copy_(w.float())
    layer = HQQLinear(lin, BaseQuantizeConfig(nbits=bits, group_size=g, axis=AXIS), del_orig=True,
                      compute_dtype=torch.float32, device="cpu")
    for key in ("scale", "zero"):
        layer.meta[key] = layer.meta[key].half()
    state = {k: v.detach().cpu().contiguous() for k, v in layer.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    save_file(state, tmp)
    os.replace(tmp, path)
    return state


def hqq028_layer(state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The frozen HQQLinear of a cached state (fp16 scale/zero, float32 compute)."""
    from hqq.core.quantize import HQQLinear

    layer = HQQLinear(None, quant_config=None, compute_dtype=torch.float32, device="cpu", initialize=False)
    layer.load_state_dict({k: v.clone() for k, v in state.items()})
    for key in ("scale", "zero"):
        layer.meta[key] = layer.meta[key].half()
    return layer


def packed_from_hqq028(state: dict[str, torch.Tensor], meta_bits: int) -> dict[str, torch.Tensor]:
    """The exactly packed state of HQQ's own codes, scale and zero (no re-quantization)."""
    from hqq.core.quantize import Quantizer

    from autoqra.quant.packed import state_from_codes

    layer = hqq028_layer(state)
    meta = layer.meta
    bits, g = int(meta["nbits"]), int(meta["group_size"])
    codes = Quantizer.unpack[meta["packing"]](layer.W_q, dtype=torch.uint8)
    if bits == 3:
        codes = codes[:g]  # HQQ's padding of the packed axis (axis 0)
    shape = tuple(int(x) for x in meta["shape"])
    return state_from_codes({"codes": codes.reshape(-1), "scale": meta["scale"].reshape(-1).half(),
                             "zero": meta["zero"].reshape(-1).half()}, bits, g, AXIS, meta_bits, shape)


def _layers(base, shape: ModelShape, cfg: dict, cache):
    """(module path, frozen layer) of every projection for an HQQ or NF4 configuration."""
    from autoqra.quant.packed import PackedLinear

    q, bits, g = cfg["quantizer"], cfg["bits"], cfg["group_size"]
    for block in range(shape.n_blocks):
        for proj in PROJECTIONS:
            path = projection_module(block, proj)
            if q == "nf4":
                w = base.model.get_submodule(path).weight
                state = cache.get_or_create("nf4", 64, AXIS, 4, block, proj,
                                            lambda w=w: quantize(w.detach(), "nf4", 4, 64, AXIS))
                yield path, make_layer(state, "nf4", 4, "cpu", torch.float32)
                continue
            state = hqq028_state(base, cache, bits, g, block, proj)
            if q == "hqq028":
                yield path, hqq028_layer(state)
            else:
                yield path, PackedLinear(packed_from_hqq028(state, cfg["meta_bits"]), "cpu", torch.float32)


def real_model(base, shape: ModelShape, cfg: dict, cache):
    """The model with the configuration's real layers (to check the dequantized eval path)."""
    memo = {id(t): t for t in [*base.model.parameters(), *base.model.buffers()]}
    model = copy.deepcopy(base.model, memo)
    for path, layer in _layers(base, shape, cfg, cache):
        parent, name = path.rsplit(".", 1)
        setattr(model.get_submodule(parent), name, layer)
    return model


def predicted_bytes(shape: ModelShape, cfg: dict) -> int:
    """The memory model's bytes for all block projections (HQQ 0.2.8's own layout: :func:`hqq028_bytes`)."""
    q, bits = cfg["quantizer"], cfg["bits"]
    if q == "hqq028":
        return shape.n_blocks * sum(hqq028_bytes(p, bits, cfg["group_size"], AXIS) for p in shape.projections())
    mm = MemoryModel(shape, {bits: q}, cfg["group_size"] or 64, AXIS, meta_bits=cfg["meta_bits"] or 16)
    cost = mm.block_cost(bits, 1, q)
    return int(shape.n_blocks * (cost["weights"] + cost["quant_meta"]))


def quantized_projections(base, shape: ModelShape, cfg: dict, cache) -> dict:
    """``{weights, quant_meta, predicted, dense | model, fingerprint}`` of one configuration: bytes
    counted from the stored tensors, or ``{"skip": reason}`` when the model's shapes do not allow it."""
    q, bits, g = cfg["quantizer"], cfg["bits"], cfg["group_size"]
    if q.startswith("hqq"):
        errs = [e for p in shape.projections() if (e := hqq_layout_error(p, bits, g, AXIS))]
        if errs:
            return {"skip": errs[0]}
    tot = {"weights": 0, "quant_meta": 0}
    if q == "int8":  # activations are quantized too: score the real layers
        model = quantize_base(base, Plan.uniform(shape.n_blocks, 8, 1, "int8", 64, AXIS), cache)
        for block in range(shape.n_blocks):
            for proj in PROJECTIONS:
                sb = stored_bytes(model.get_submodule(projection_module(block, proj)))
                tot = {k: tot[k] + int(sb[k]) for k in tot}
        return {**tot, "predicted": predicted_bytes(shape, cfg), "model": model}
    dense = {}
    for path, layer in _layers(base, shape, cfg, cache):
        sb = stored_bytes(layer)
        tot = {k: tot[k] + int(sb[k]) for k in tot}
        dense[path] = dequantized_weight(layer).float().reshape(base.model.get_submodule(path).weight.shape)
    return {**tot, "predicted": predicted_bytes(shape, cfg), "dense": dense,
            "fingerprint": fingerprint(dense) if q.startswith("hqq") else None}
