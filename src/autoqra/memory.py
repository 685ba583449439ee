"""The analytic memory model of a plan, computed from the base model's real projection shapes.

    M(C) = Σ_ℓ  |W_ℓ|·q_ℓ/8  +  n_ℓ^lora·r_ℓ·2  +  quantization metadata(ℓ)

with |W_ℓ| the parameter count of block ℓ's seven projections (GQA shapes included), n_ℓ^lora the
LoRA parameters per unit rank (Σ over projections of in+out; adapters charged at 16 bit, the
paper's convention) and the metadata of block ℓ's quantizer (:func:`weight_bytes`, exact for the
stored layout): HQQ codes packed exactly (``bits``/8 bytes per weight, the last partial word of a
tensor padded; :mod:`autoqra.quant.packed`) and per group of ``g`` weights a scale and a zero in 16
bits, or with ``meta_bits`` 8 in 8 bits plus an fp16 offset and step per block of groups; NF4 one 8-bit absmax per 64
weights plus the fp32 double-quantization constants; int8 one fp32 scale per output row.
The fixed part (embeddings, lm_head, norms, biases at 16 bit) does not depend on the plan and is
reported beside M(C). Budgets apply to M(C); budgets given as bytes/GB mean the whole model
(fixed part + M(C)), which is what a user's "fits in N GB" means.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from autoqra.errors import ConfigError, ModelError
from autoqra.plan import (
    DEFAULT_HQQ_AXIS,
    DEFAULT_META_BITS,
    LEGACY_BACKENDS,
    PROJECTIONS,
    Ladders,
    Plan,
    check_quantizer,
    quantizer_map,
)

GB = 1e9
# HQQ codes as autoqra stores them (autoqra.quant.packed, flat): codes per word and bytes per word
# (eight 3-bit codes in three bytes).
HQQ_PACKING = {2: (4, 1), 3: (8, 3), 4: (2, 1), 8: (1, 1)}
HQQ_META_BLOCK = 256        # groups per 8-bit-metadata block (fp16 offset + step for scale and zero)
BNB_BLOCKSIZE = 64          # NF4 block size (QLoRA)
BNB_DQ_BLOCKSIZE = 256      # double-quantization block size of the absmax constants


@dataclass(frozen=True)
class ProjectionShape:
    name: str
    in_features: int
    out_features: int
    bias: bool = False

    @property
    def numel(self) -> int:
        return self.in_features * self.out_features


@dataclass(frozen=True)
class ModelShape:
    """What the memory model needs from a decoder-only (Llama/Qwen/Mistral-style) config."""

    model_type: str
    n_blocks: int
    hidden_size: int
    intermediate_size: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False

    @classmethod
    def from_config(cls, cfg: Mapping, source: str = "config") -> ModelShape:
        """Read the shapes from an HF ``config.json`` dict (text_config of multimodal configs too)."""
        cfg = dict(cfg.get("text_config") or cfg)
        need = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads", "vocab_size")
        missing = [k for k in need if k not in cfg]
        if missing:
            raise ModelError(f"{source}: model config lacks {missing}; expected a Llama/Qwen-style decoder config")
        mt = str(cfg.get("model_type", "llama"))
        heads = int(cfg["num_attention_heads"])
        return cls(
            model_type=mt,
            n_blocks=int(cfg["num_hidden_layers"]),
            hidden_size=int(cfg["hidden_size"]),
            intermediate_size=int(cfg["intermediate_size"]),
            n_heads=heads,
            n_kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or cfg["hidden_size"] // heads),
            vocab_size=int(cfg["vocab_size"]),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            # Qwen2's modeling code hard-wires q/k/v biases whatever the config says.
            attention_bias=mt == "qwen2" or bool(cfg.get("attention_bias", False)),
            mlp_bias=bool(cfg.get("mlp_bias", False)),
            qk_norm=mt in ("qwen3", "qwen3_moe"),
        )

    @classmethod
    def from_path(cls, path: str | os.PathLike) -> ModelShape:
        """From a model directory or a config.json file."""
        p = Path(path)
        cfg_file = p / "config.json" if p.is_dir() else p
        if not cfg_file.is_file():
            raise ModelError(f"{path}: expected a model directory with config.json or a config.json file")
        try:
            return cls.from_config(json.loads(cfg_file.read_text()), source=str(cfg_file))
        except json.JSONDecodeError as e:
            raise ModelError(f"{cfg_file}: invalid JSON at line {e.lineno}: {e.msg}") from None

    def projections(self) -> list[ProjectionShape]:
        """The seven projections of one block, as (in, out) shapes."""
        h, i, hd = self.hidden_size, self.intermediate_size, self.head_dim
        q_out, kv_out = self.n_heads * hd, self.n_kv_heads * hd
        ab, mb = self.attention_bias, self.mlp_bias
        shapes = {
            "q_proj": (h, q_out, ab), "k_proj": (h, kv_out, ab), "v_proj": (h, kv_out, ab),
            "o_proj": (q_out, h, False), "gate_proj": (h, i, mb), "up_proj": (h, i, mb), "down_proj": (i, h, mb),
        }
        return [ProjectionShape(p, *shapes[p]) for p in PROJECTIONS]

    @property
    def block_weight_params(self) -> int:
        """|W_ℓ|: weights of the seven projections of one block."""
        return sum(p.numel for p in self.projections())

    @property
    def lora_params_per_rank(self) -> int:
        """n_ℓ^lora: LoRA parameters per unit rank in one block (Σ in + out)."""
        return sum(p.in_features + p.out_features for p in self.projections())

    @property
    def fixed_params(self) -> dict[str, int]:
        """Parameters kept at 16 bit whatever the plan."""
        h, n = self.hidden_size, self.n_blocks
        emb = self.vocab_size * h
        per_block_norm = 2 * h + (2 * self.head_dim if self.qk_norm else 0)
        biases = sum(p.out_features for p in self.projections() if p.bias)
        return {"embed_tokens": emb, "lm_head": 0 if self.tie_word_embeddings else emb,
                "norms": n * per_block_norm + h, "biases": n * biases}


def hqq_grid(n: int, group_size: int, axis: int) -> tuple[int, int]:
    """(rows, cols) of HQQ's grouped view of ``n`` weights: axis 0 = (g, n/g), axis 1 = (n/g, g)."""
    return (group_size, n // group_size) if axis == 0 else (n // group_size, group_size)


def hqq_layout_error(proj: ProjectionShape, bits: int, group_size: int, axis: int) -> str | None:
    """Why HQQ cannot store ``proj`` at (bits, group, axis), or None. The codes are packed flat, so
    only the grouping constrains the shape (hqq asserts otherwise)."""
    n = proj.numel
    if n % group_size:
        return f"{proj.name} ({proj.out_features}x{proj.in_features}) has {n} weights, not a multiple of group size {group_size}"
    return None


def hqq_meta_bytes(n_groups: int, meta_bits: int) -> int:
    """Bytes of the scale and zero of ``n_groups`` HQQ groups stored in ``meta_bits`` bits."""
    if meta_bits == 16:
        return n_groups * 2 * 2
    if meta_bits == 8:  # uint8 scale and zero, plus fp16 (offset, step) of each per block of groups
        return n_groups * 2 + math.ceil(n_groups / HQQ_META_BLOCK) * 2 * 2 * 2
    raise ConfigError(f"meta_bits must be 16 or 8, got {meta_bits!r} (config key 'search_space.meta_bits')")


def weight_bytes(proj: ProjectionShape, bits: int, quantizer: str, group_size: int,
                 hqq_axis: int = DEFAULT_HQQ_AXIS, meta_bits: int = DEFAULT_META_BITS) -> tuple[float, float]:
    """(packed weight bytes, quantization-metadata bytes) of one projection at ``bits`` as stored by
    ``quantizer`` (hqq with ``meta_bits`` scale/zero, nf4, int8, or none = 2 bytes per weight); the
    axis does not change HQQ's bytes."""
    check_quantizer(quantizer, bits, where=f"{proj.name}")
    n = proj.numel
    if quantizer == "none":
        return 2.0 * n, 0.0
    if quantizer == "hqq":
        per_word, word_bytes = HQQ_PACKING[bits]
        return float(math.ceil(n / per_word) * word_bytes), float(hqq_meta_bytes(math.ceil(n / group_size), meta_bits))
    if quantizer == "nf4":  # 8-bit absmax per 64, an fp32 absmax per 256 of those, one fp32 offset
        blocks = math.ceil(n / BNB_BLOCKSIZE)
        return float(math.ceil(n / 2)), blocks * 1 + math.ceil(blocks / BNB_DQ_BLOCKSIZE) * 4 + 4
    return float(n), proj.out_features * 4.0  # int8: int8 weights + one fp32 scale per output row


class MemoryModel:
    """M(plan) for one base model under a quantizer map (bit-width -> quantizer), HQQ group size,
    axis and metadata precision; per-(bits, rank, quantizer) block costs cached.

    ``quantizers`` may also be an old backend name ("hqq", "bnb", "none"), read as its map.
    Plans are charged with their own per-block quantizers; bits alone with the map's.
    """

    def __init__(self, shape: ModelShape, quantizers: Mapping | str | None = None, group_size: int = 128,
                 hqq_axis: int = DEFAULT_HQQ_AXIS, meta_bits: int = DEFAULT_META_BITS):
        if isinstance(quantizers, str):
            quantizers = LEGACY_BACKENDS[quantizers]
        self.shape, self.group_size, self.hqq_axis, self.meta_bits = shape, group_size, hqq_axis, meta_bits
        self.quantizers = quantizer_map(quantizers)
        self._cache: dict[tuple[int, int, str], dict[str, float]] = {}

    @classmethod
    def for_plan(cls, shape: ModelShape, plan: Plan, quantizers: Mapping | None = None) -> MemoryModel:
        """The memory model with the plan's group size, HQQ axis and metadata precision."""
        return cls(shape, quantizers, plan.group_size, plan.hqq_axis, plan.meta_bits)

    def block_cost(self, bits: int, rank: int, quantizer: str | None = None) -> dict[str, float]:
        """Bytes of one block at (bits, rank) with ``quantizer`` (default: the map's for ``bits``):
        weights, quant metadata, lora, total."""
        q = quantizer or self.quantizers[bits]
        key = (bits, rank, q)
        if key not in self._cache:
            w = m = 0.0
            for p in self.shape.projections():
                pw, pm = weight_bytes(p, bits, q, self.group_size, self.hqq_axis, self.meta_bits)
                w, m = w + pw, m + pm
            lora = self.shape.lora_params_per_rank * rank * 2.0
            self._cache[key] = {"weights": w, "quant_meta": m, "lora": lora, "total": w + m + lora}
        return self._cache[key]

    def plan_bytes(self, plan: Plan | tuple[Sequence[int], Sequence[int]]) -> float:
        """M(C): bytes of all blocks (the part the plan controls)."""
        if isinstance(plan, Plan):
            return sum(self.block_cost(b, r, q)["total"] for b, r, q in zip(plan.bits, plan.ranks, plan.quantizers,
                                                                              strict=True))
        bits, ranks = plan
        return sum(self.block_cost(b, r)["total"] for b, r in zip(bits, ranks, strict=True))

    @property
    def fixed_bytes(self) -> float:
        return 2.0 * sum(self.shape.fixed_params.values())

    def uniform(self, bits: int, rank: int, quantizer: str | None = None) -> Plan:
        """Every block at (bits, rank) with ``quantizer`` (default: the map's for ``bits``), this model's
        group size and axis."""
        return Plan.uniform(self.shape.n_blocks, bits, rank, quantizer or self.quantizers[bits], self.group_size,
                            self.hqq_axis, self.meta_bits)

    def breakdown(self, plan: Plan) -> dict:
        """Per-block and total bytes of ``plan`` plus the fixed 16-bit part."""
        if plan.n_blocks != self.shape.n_blocks:
            from autoqra.errors import PlanError
            raise PlanError(f"plan has {plan.n_blocks} blocks, the model has {self.shape.n_blocks}")
        blocks = [{"block": i, "bits": b, "rank": r, "quantizer": q, **self.block_cost(b, r, q)}
                  for i, (b, r, q) in enumerate(zip(plan.bits, plan.ranks, plan.quantizers, strict=True))]
        tot = {k: sum(bl[k] for bl in blocks) for k in ("weights", "quant_meta", "lora", "total")}
        return {"quantizers": plan.quantizer_label, "group_size": self.group_size, "hqq_axis": self.hqq_axis,
                "meta_bits": self.meta_bits,
                "blocks": blocks, "plan_bytes": tot["total"], "plan_parts": tot,
                "fixed_bytes": self.fixed_bytes, "fixed_params": self.shape.fixed_params,
                "total_bytes": tot["total"] + self.fixed_bytes,
                "block_weight_params": self.shape.block_weight_params,
                "lora_params_per_rank": self.shape.lora_params_per_rank,
                "trainable_params": sum(self.shape.lora_params_per_rank * r for r in plan.ranks)}

    def min_plan_bytes(self, ladders: Ladders) -> float:
        """The smallest M(C) on the ladders: every block at the lowest bits and rank."""
        return self.shape.n_blocks * self.block_cost(ladders.bits[0], ladders.ranks[0])["total"]

    def max_plan_bytes(self, ladders: Ladders) -> float:
        return self.shape.n_blocks * self.block_cost(ladders.bits[-1], ladders.ranks[-1])["total"]

    def layout_errors(self, bits: Sequence[int]) -> list[str]:
        """Why HQQ cannot store some rung of ``bits`` for this model's shapes (empty when it can)."""
        errs = []
        for b in bits:
            if self.quantizers[b] == "hqq":
                errs += [f"{b}-bit: {e}" for p in self.shape.projections()
                         if (e := hqq_layout_error(p, b, self.group_size, self.hqq_axis))]
        return errs


@dataclass(frozen=True)
class Budget:
    """A memory budget on M(C) (block bytes), with the spec it came from."""

    plan_bytes: float
    description: str

    def fits(self, plan_bytes: float) -> bool:
        return plan_bytes <= self.plan_bytes * (1 + 1e-12)


def resolve_budget(spec: Mapping, mm: MemoryModel, ladders: Ladders | None = None,
                   key: str = "budget") -> Budget:
    """Turn a budget spec into bytes on M(C) and check that at least the smallest plan fits.

    spec: {"type": "uniform", "bits": 4, "rank": 8} (default: uniform 4-bit at rank 8, stored by the map's
    quantizer for those bits unless the spec names a "quantizer"), or
    {"type": "between", "low_bits": 2, "high_bits": 4, "fraction": 0.5, "rank": 8}: that fraction of the
    way from the uniform low-bit plan's M(C) to the uniform high-bit plan's (each stored by the map's
    quantizer), a budget between two uniform plans on any model's shapes, or
    {"type": "bytes", "value": N} / {"type": "gb", "value": x} for the whole model (fixed part included).
    """
    kind = spec.get("type", "uniform")
    if kind == "uniform":
        bits, rank = int(spec.get("bits", 4)), int(spec.get("rank", 8))
        q = spec.get("quantizer") or mm.quantizers[bits]
        check_quantizer(q, bits, where=f"config key '{key}.quantizer'")
        b = mm.plan_bytes(mm.uniform(bits, rank, q))
        budget = Budget(b, f"uniform {bits}-bit ({q}) at rank {rank}")
    elif kind == "between":
        lo_bits, hi_bits, rank = int(spec["low_bits"]), int(spec["high_bits"]), int(spec.get("rank", 8))
        frac = float(spec.get("fraction", 0.5))
        if not (lo_bits < hi_bits and 0.0 <= frac <= 1.0):
            raise ConfigError(f"config key '{key}': type 'between' needs low_bits < high_bits and 0 <= fraction <= 1, "
                              f"got low_bits {lo_bits}, high_bits {hi_bits}, fraction {frac}")
        lo, hi = (mm.plan_bytes(mm.uniform(b, rank, mm.quantizers[b])) for b in (lo_bits, hi_bits))
        budget = Budget(lo + frac * (hi - lo), f"{frac:g} of the way from uniform {lo_bits}-bit "
                        f"({mm.quantizers[lo_bits]}) to uniform {hi_bits}-bit ({mm.quantizers[hi_bits]}) at rank {rank}")
    elif kind in ("bytes", "gb"):
        total = float(spec["value"]) * (GB if kind == "gb" else 1.0)
        budget = Budget(total - mm.fixed_bytes, f"{spec['value']} {'GB' if kind == 'gb' else 'bytes'} in total")
    else:
        raise ConfigError(f"config key '{key}.type': '{kind}' unknown; expected 'uniform', 'between', 'bytes' or 'gb'")
    if ladders is not None:
        lo = mm.min_plan_bytes(ladders)
        if budget.plan_bytes < lo:
            raise ConfigError(
                f"config key '{key}': {budget.description} leaves {budget.plan_bytes / GB:.4f} GB for the blocks, below the "
                f"smallest possible plan ({ladders.bits[0]}-bit, rank {ladders.ranks[0]} everywhere: "
                f"{lo / GB:.4f} GB; fixed 16-bit part {mm.fixed_bytes / GB:.4f} GB)")
    return budget


def space_memory_model(shape: ModelShape, space: Mapping) -> MemoryModel:
    """The memory model of a ``search_space`` config section (quantizer map, group size, HQQ axis,
    metadata precision)."""
    return MemoryModel(shape, space["quantizers"], space["group_size"], space["hqq_axis"],
                       space.get("meta_bits", DEFAULT_META_BITS))


def budget_report(shape: ModelShape, space: Mapping, budget_spec: Mapping) -> tuple[dict, list[dict]]:
    """The resolved budget for a model plus the reference plans (uniform bit-widths, the
    smallest and largest plans on the ladders) with their memory and whether they fit."""
    ladders = Ladders(tuple(space["bits"]), tuple(space["ranks"]))
    mm = space_memory_model(shape, space)
    budget = resolve_budget(budget_spec, mm, ladders)
    r_ref = int(budget_spec.get("rank", 8))
    refs = [(f"uniform-{bits}bit-r{r_ref}", mm.uniform(bits, r_ref)) for bits in sorted(set(ladders.bits) | {16})]
    refs.append(("smallest", mm.uniform(ladders.bits[0], ladders.ranks[0])))
    refs.append(("largest", mm.uniform(ladders.bits[-1], ladders.ranks[-1])))
    rows = []
    for name, plan in refs:
        bd = mm.breakdown(plan)
        rows.append({"plan": name, "bits": plan.bits[0], "rank": plan.ranks[0], "quantizer": plan.quantizers[0],
                     "plan_bytes": bd["plan_bytes"], "total_bytes": bd["total_bytes"],
                     "lora_params": bd["trainable_params"], "fits_budget": budget.fits(bd["plan_bytes"])})
    info = {"description": budget.description, "spec": dict(budget_spec), "plan_bytes": budget.plan_bytes,
            "fixed_bytes": mm.fixed_bytes, "total_bytes": budget.plan_bytes + mm.fixed_bytes,
            "ladders": {"bits": list(ladders.bits), "ranks": list(ladders.ranks)},
            "quantizers": {str(b): mm.quantizers[b] for b in sorted(set(ladders.bits) | {16})},
            "group_size": mm.group_size, "hqq_axis": mm.hqq_axis, "n_blocks": shape.n_blocks,
            "block_weight_params": shape.block_weight_params,
            "lora_params_per_rank": shape.lora_params_per_rank,
            "min_plan_bytes": mm.min_plan_bytes(ladders), "max_plan_bytes": mm.max_plan_bytes(ladders)}
    return info, rows
