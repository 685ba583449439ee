"""Plans: per-block weight bit-widths and LoRA ranks, with ladders, JSON round-trip and a stable hash.

A plan's choice for block ℓ applies to all seven projections of that block (q, k, v, o, gate, up,
down). Embeddings, norms and lm_head stay 16-bit and get no adapter.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from autoqra.errors import PlanError
from autoqra.io import atomic_write_json

ALLOWED_BITS = (2, 3, 4, 8, 16)
DEFAULT_BITS_LADDER = (2, 3, 4, 8)
DEFAULT_RANK_LADDER = (4, 8, 16)
BACKENDS = ("hqq", "bnb", "none")
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ATTENTION_PROJECTIONS = PROJECTIONS[:4]


def projection_module(block: int, proj: str) -> str:
    """Module path of a projection inside a Llama/Qwen/Mistral-style CausalLM."""
    if proj not in PROJECTIONS:
        raise ValueError(f"unknown projection {proj!r}; expected one of {PROJECTIONS}")
    if block < 0:
        raise ValueError(f"block index must be >= 0, got {block}")
    parent = "self_attn" if proj in ATTENTION_PROJECTIONS else "mlp"
    return f"model.layers.{block}.{parent}.{proj}"


@dataclass(frozen=True)
class Ladders:
    """The search space: allowed bit-widths and ranks, each sorted ascending."""

    bits: tuple[int, ...] = DEFAULT_BITS_LADDER
    ranks: tuple[int, ...] = DEFAULT_RANK_LADDER

    def __post_init__(self) -> None:
        if not self.bits:
            raise PlanError("bits ladder is empty; expected a non-empty subset of {2,3,4,8,16}")
        if not self.ranks:
            raise PlanError("ranks ladder is empty; expected positive integers")
        bad = [b for b in self.bits if b not in ALLOWED_BITS]
        if bad:
            raise PlanError(f"bits ladder has {bad}; allowed bit-widths are {list(ALLOWED_BITS)}")
        bad = [r for r in self.ranks if not isinstance(r, int) or r <= 0]
        if bad:
            raise PlanError(f"ranks ladder has {bad}; ranks must be positive integers")
        object.__setattr__(self, "bits", tuple(sorted(set(self.bits))))
        object.__setattr__(self, "ranks", tuple(sorted(set(self.ranks))))


@dataclass(frozen=True)
class Plan:
    """Per-block bit-widths and LoRA ranks plus the quantization backend they apply to."""

    bits: tuple[int, ...]
    ranks: tuple[int, ...]
    backend: str = "hqq"
    group_size: int = 128
    granularity: str = "block"
    meta: Mapping = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "bits", tuple(int(b) for b in self.bits))
        object.__setattr__(self, "ranks", tuple(int(r) for r in self.ranks))
        if len(self.bits) != len(self.ranks):
            raise PlanError(f"plan has {len(self.bits)} bits but {len(self.ranks)} ranks; expected one of each per block")
        if not self.bits:
            raise PlanError("plan has no blocks")
        bad = sorted({b for b in self.bits if b not in ALLOWED_BITS})
        if bad:
            raise PlanError(f"plan bits {bad} not allowed; expected values in {list(ALLOWED_BITS)}")
        if any(r <= 0 for r in self.ranks):
            raise PlanError(f"plan ranks must be positive integers, got {sorted(set(self.ranks))}")
        if self.backend not in BACKENDS:
            raise PlanError(f"plan backend '{self.backend}' unknown; expected one of {list(BACKENDS)}")
        if self.group_size <= 0:
            raise PlanError(f"plan group_size must be positive, got {self.group_size}")
        if self.granularity != "block":
            raise PlanError(f"plan granularity '{self.granularity}' unsupported; expected 'block'")
        if self.backend == "bnb" and any(b not in (4, 8, 16) for b in self.bits):
            raise PlanError(f"backend 'bnb' supports bits 4 (NF4), 8 (int8), 16; plan has {sorted(set(self.bits))}")

    # -- constructors -----------------------------------------------------------------
    @classmethod
    def uniform(cls, n_blocks: int, bits: int, rank: int, backend: str = "hqq",
                group_size: int = 128) -> Plan:
        """The same bits and rank in every block."""
        return cls((bits,) * n_blocks, (rank,) * n_blocks, backend=backend, group_size=group_size)

    @classmethod
    def from_dict(cls, d: Mapping, source: str = "plan") -> Plan:
        """Build from the plan JSON contract; ``source`` names the file in error messages."""
        if not isinstance(d, Mapping):
            raise PlanError(f"{source}: expected a JSON object with 'bits' and 'ranks'")
        missing = [k for k in ("bits", "ranks") if k not in d]
        if missing:
            raise PlanError(f"{source}: missing key(s) {missing}; expected 'bits' and 'ranks' lists")
        known = {"bits", "ranks", "backend", "group_size", "granularity", "meta"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise PlanError(f"{source}: unknown key(s) {unknown}; allowed keys are {sorted(known)}")
        for k in ("bits", "ranks"):
            if not isinstance(d[k], list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in d[k]):
                raise PlanError(f"{source}: '{k}' must be a list of integers")
        try:
            return cls(tuple(d["bits"]), tuple(d["ranks"]), backend=d.get("backend", "hqq"),
                       group_size=int(d.get("group_size", 128)), granularity=d.get("granularity", "block"),
                       meta=dict(d.get("meta", {})))
        except PlanError as e:
            raise PlanError(f"{source}: {e}") from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> Plan:
        """Read a plan JSON file."""
        try:
            with open(path, encoding="utf-8") as fh:
                d = json.load(fh)
        except FileNotFoundError:
            raise PlanError(f"plan file {path} does not exist") from None
        except json.JSONDecodeError as e:
            raise PlanError(f"plan file {path}: invalid JSON at line {e.lineno}: {e.msg}") from None
        return cls.from_dict(d, source=str(path))

    # -- serialisation ----------------------------------------------------------------
    def to_dict(self, with_meta: bool = True) -> dict:
        d = {"bits": list(self.bits), "ranks": list(self.ranks), "granularity": self.granularity,
             "backend": self.backend, "group_size": self.group_size}
        if with_meta and self.meta:
            d["meta"] = dict(self.meta)
        return d

    def save(self, path: str | os.PathLike) -> Path:
        return atomic_write_json(path, self.to_dict())

    @property
    def hash(self) -> str:
        """Stable content hash (16 hex chars) over bits, ranks, backend, group size; meta excluded."""
        canon = json.dumps(self.to_dict(with_meta=False), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()[:16]

    # -- queries ----------------------------------------------------------------------
    @property
    def n_blocks(self) -> int:
        return len(self.bits)

    def average_bits(self, block_weights: Sequence[int] | None = None) -> float:
        """Mean bit-width, weighted by block parameter counts when given."""
        w = block_weights or [1] * self.n_blocks
        return sum(b * n for b, n in zip(self.bits, w, strict=True)) / sum(w)

    def check(self, n_blocks: int | None = None, ladders: Ladders | None = None,
              source: str = "plan") -> Plan:
        """Raise PlanError unless the plan has ``n_blocks`` blocks and values on ``ladders``."""
        if n_blocks is not None and self.n_blocks != n_blocks:
            raise PlanError(f"{source}: plan has {self.n_blocks} blocks, the model has {n_blocks}")
        if ladders is not None:
            off = sorted({b for b in self.bits if b not in ladders.bits})
            if off:
                raise PlanError(f"{source}: bits {off} are not on the ladder {list(ladders.bits)}")
            off = sorted({r for r in self.ranks if r not in ladders.ranks})
            if off:
                raise PlanError(f"{source}: ranks {off} are not on the ladder {list(ladders.ranks)}")
        return self

    def replace(self, **changes) -> Plan:
        d = self.to_dict() | changes
        return Plan(tuple(d["bits"]), tuple(d["ranks"]), d["backend"], d["group_size"], d["granularity"],
                    d.get("meta", {}))

    # -- PEFT export ------------------------------------------------------------------
    def rank_pattern(self) -> dict[str, int]:
        """PEFT ``rank_pattern``: one anchored regex per projection module -> rank."""
        return {_module_regex(b, p): r for b, r in enumerate(self.ranks) for p in PROJECTIONS}

    def alpha_pattern(self, alpha_per_rank: float = 2.0) -> dict[str, float]:
        """PEFT ``alpha_pattern`` with α = alpha_per_rank · r (the paper uses α = 2r)."""
        return {k: alpha_per_rank * r for k, r in self.rank_pattern().items()}

    def module_bits(self) -> dict[str, int]:
        """Module path -> bit-width for every projection."""
        return {projection_module(b, p): q for b, q in enumerate(self.bits) for p in PROJECTIONS}

    def module_ranks(self) -> dict[str, int]:
        """Module path -> LoRA rank for every projection."""
        return {projection_module(b, p): r for b, r in enumerate(self.ranks) for p in PROJECTIONS}


def _module_regex(block: int, proj: str) -> str:
    # PEFT matches pattern keys with re.match(rf"(.*\.)?({key})$", name); escaping the dots keeps
    # "layers.1." from matching "layers.11." and anchors the key to exactly one module.
    return re.escape(projection_module(block, proj))
