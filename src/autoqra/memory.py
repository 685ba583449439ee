"""The analytic memory model of a plan, computed from the base model's real projection shapes.

    M(C) = Σ_ℓ  |W_ℓ|·q_ℓ/8  +  n_ℓ^lora·r_ℓ·2  +  quantization metadata(ℓ)

with |W_ℓ| the parameter count of block ℓ's seven projections (GQA shapes included), n_ℓ^lora the
LoRA parameters per unit rank (Σ over projections of in+out; adapters stored in 16 bit) and, for
HQQ, one fp16 scale and one fp16 zero per group of ``g`` weights. Group counts are taken per
projection (ceil(in·out/g) each), which equals the paper's ceil(|W_ℓ|/g) for all real shapes.
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
from autoqra.plan import PROJECTIONS, Ladders, Plan

GB = 1e9
# Storage bits per weight actually used by the backend's packing (HQQ packs ten 3-bit values
# into one int32, i.e. 3.2 bits/weight); charging the real packing keeps the budget honest.
# Kept as (bits, values) per storage word so byte counts stay exact integers.
PACKED_BITS = {"hqq": {2: (2, 1), 3: (32, 10), 4: (4, 1), 8: (8, 1)}}
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


def weight_bytes(proj: ProjectionShape, bits: int, backend: str, group_size: int) -> tuple[float, float]:
    """(packed weight bytes, quantization-metadata bytes) of one projection at ``bits``."""
    n = proj.numel
    if bits == 16 or backend == "none":
        return 2.0 * n, 0.0
    if backend == "hqq":
        num, den = PACKED_BITS["hqq"][bits]
        return n * num / (8 * den), math.ceil(n / group_size) * 2 * 2
    if backend == "bnb":
        if bits == 4:  # NF4 with double quantization (QLoRA): 8-bit absmax per 64, fp32 per 256 of those
            blocks = math.ceil(n / BNB_BLOCKSIZE)
            return n / 2, blocks * 1 + math.ceil(blocks / BNB_DQ_BLOCKSIZE) * 4 + 4
        if bits == 8:  # LLM.int8: int8 weights + one fp32 scale per output row
            return float(n), proj.out_features * 4.0
    raise ValueError(f"backend {backend!r} cannot store {bits}-bit weights")


class MemoryModel:
    """M(plan) for one base model, backend and group size; per-(bits, rank) block costs cached."""

    def __init__(self, shape: ModelShape, backend: str = "hqq", group_size: int = 128):
        self.shape, self.backend, self.group_size = shape, backend, group_size
        self._cache: dict[tuple[int, int], dict[str, float]] = {}

    def block_cost(self, bits: int, rank: int) -> dict[str, float]:
        """Bytes of one block at (bits, rank): weights, quant metadata, lora, total."""
        key = (bits, rank)
        if key not in self._cache:
            w = m = 0.0
            for p in self.shape.projections():
                pw, pm = weight_bytes(p, bits, self.backend, self.group_size)
                w, m = w + pw, m + pm
            lora = self.shape.lora_params_per_rank * rank * 2.0
            self._cache[key] = {"weights": w, "quant_meta": m, "lora": lora, "total": w + m + lora}
        return self._cache[key]

    def plan_bytes(self, plan: Plan | tuple[Sequence[int], Sequence[int]]) -> float:
        """M(C): bytes of all blocks (the part the plan controls)."""
        bits, ranks = (plan.bits, plan.ranks) if isinstance(plan, Plan) else plan
        return sum(self.block_cost(b, r)["total"] for b, r in zip(bits, ranks, strict=True))

    @property
    def fixed_bytes(self) -> float:
        return 2.0 * sum(self.shape.fixed_params.values())

    def breakdown(self, plan: Plan) -> dict:
        """Per-block and total bytes of ``plan`` plus the fixed 16-bit part."""
        if plan.n_blocks != self.shape.n_blocks:
            from autoqra.errors import PlanError
            raise PlanError(f"plan has {plan.n_blocks} blocks, the model has {self.shape.n_blocks}")
        blocks = [{"block": i, "bits": b, "rank": r, **self.block_cost(b, r)}
                  for i, (b, r) in enumerate(zip(plan.bits, plan.ranks, strict=True))]
        tot = {k: sum(bl[k] for bl in blocks) for k in ("weights", "quant_meta", "lora", "total")}
        return {"backend": self.backend, "group_size": self.group_size, "blocks": blocks,
                "plan_bytes": tot["total"], "plan_parts": tot,
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

    spec: {"type": "uniform", "bits": 4, "rank": 8} (default: uniform 4-bit at rank 8), or
    {"type": "bytes", "value": N} / {"type": "gb", "value": x} for the whole model (fixed part included).
    """
    kind = spec.get("type", "uniform")
    if kind == "uniform":
        bits, rank = int(spec.get("bits", 4)), int(spec.get("rank", 8))
        b = mm.plan_bytes(Plan.uniform(mm.shape.n_blocks, bits, rank, mm.backend if bits != 16 else "none",
                                       mm.group_size))
        budget = Budget(b, f"uniform {bits}-bit at rank {rank}")
    elif kind in ("bytes", "gb"):
        total = float(spec["value"]) * (GB if kind == "gb" else 1.0)
        budget = Budget(total - mm.fixed_bytes, f"{spec['value']} {'GB' if kind == 'gb' else 'bytes'} in total")
    else:
        raise ConfigError(f"config key '{key}.type': '{kind}' unknown; expected 'uniform', 'bytes' or 'gb'")
    if ladders is not None:
        lo = mm.min_plan_bytes(ladders)
        if budget.plan_bytes < lo:
            raise ConfigError(
                f"config key '{key}': {budget.description} leaves {budget.plan_bytes / GB:.4f} GB for the blocks, below the "
                f"smallest possible plan ({ladders.bits[0]}-bit, rank {ladders.ranks[0]} everywhere: "
                f"{lo / GB:.4f} GB; fixed 16-bit part {mm.fixed_bytes / GB:.4f} GB)")
    return budget


def budget_report(shape: ModelShape, space: Mapping, budget_spec: Mapping) -> tuple[dict, list[dict]]:
    """The resolved budget for a model plus the reference plans (uniform bit-widths, the
    smallest and largest plans on the ladders) with their memory and whether they fit."""
    ladders = Ladders(tuple(space["bits"]), tuple(space["ranks"]))
    mm = MemoryModel(shape, space["backend"], space["group_size"])
    budget = resolve_budget(budget_spec, mm, ladders)
    r_ref = int(budget_spec.get("rank", 8))
    refs: list[tuple[str, Plan]] = []
    for bits in sorted(set(ladders.bits) | {16}):
        backend = "none" if bits == 16 else mm.backend
        if backend == "bnb" and bits not in (4, 8):
            continue
        refs.append((f"uniform-{bits}bit-r{r_ref}", Plan.uniform(shape.n_blocks, bits, r_ref, backend, mm.group_size)))
    n = shape.n_blocks
    refs.append(("smallest", Plan.uniform(n, ladders.bits[0], ladders.ranks[0], mm.backend, mm.group_size)))
    refs.append(("largest", Plan.uniform(n, ladders.bits[-1], ladders.ranks[-1], mm.backend, mm.group_size)))
    rows = []
    for name, plan in refs:
        bd = MemoryModel(shape, plan.backend, plan.group_size).breakdown(plan)
        rows.append({"plan": name, "bits": plan.bits[0], "rank": plan.ranks[0], "backend": plan.backend,
                     "plan_bytes": bd["plan_bytes"], "total_bytes": bd["total_bytes"],
                     "lora_params": bd["trainable_params"], "fits_budget": budget.fits(bd["plan_bytes"])})
    info = {"description": budget.description, "spec": dict(budget_spec), "plan_bytes": budget.plan_bytes,
            "fixed_bytes": mm.fixed_bytes, "total_bytes": budget.plan_bytes + mm.fixed_bytes,
            "ladders": {"bits": list(ladders.bits), "ranks": list(ladders.ranks)},
            "backend": mm.backend, "group_size": mm.group_size, "n_blocks": n,
            "block_weight_params": shape.block_weight_params,
            "lora_params_per_rank": shape.lora_params_per_rank,
            "min_plan_bytes": mm.min_plan_bytes(ladders), "max_plan_bytes": mm.max_plan_bytes(ladders)}
    return info, rows
