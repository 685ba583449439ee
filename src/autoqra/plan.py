"""Plans: per-block weight bit-widths, quantizers and LoRA ranks, with ladders, JSON round-trip and a
stable hash.

A plan's choice for block ℓ applies to all seven projections of that block (q, k, v, o, gate, up,
down). Embeddings, norms and lm_head stay 16-bit and get no adapter.

Each rung of the bit ladder has its own quantizer (a *quantizer map*, config key
``search_space.quantizers``): ``hqq`` (HQQ, 2/3/4/8 bits, group-wise along ``hqq_axis``), ``nf4``
(bitsandbytes NF4 with double quantization, 4 bits), ``int8`` (bitsandbytes LLM.int8, 8 bits) and
``none`` (the dense 16-bit layer). A plan records the quantizer of every block; build them with
:func:`quantizers_for` / :meth:`Plan.mapped` rather than by hand.
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
QUANTIZERS = ("hqq", "nf4", "int8", "none")
QUANTIZER_BITS = {"hqq": (2, 3, 4, 8), "nf4": (4,), "int8": (8,), "none": (16,)}
# Without a map every quantized rung is HQQ; 16 bits is always the dense layer.
DEFAULT_QUANTIZER_MAP = {2: "hqq", 3: "hqq", 4: "hqq", 8: "hqq", 16: "none"}
HQQ_AXES = (0, 1)
# Precision of HQQ's per-group scale and zero: fp16, or 8-bit codes with a small fp16 scale per block
# (autoqra.quant.packed). 16 is the default and is left out of plan files and hashes.
META_BITS = (16, 8)
DEFAULT_META_BITS = 16
# HQQ's grouping axis when a plan does not say. axis 0 (groups across output rows) is what HQQ's
# authors measured; benchmarks/quantizer_bench.py measured it against axis 1 on the default model.
DEFAULT_HQQ_AXIS = 0
# Plan files written before quantizers were per block said "backend"; this is what each meant.
LEGACY_BACKENDS = {"hqq": {2: "hqq", 3: "hqq", 4: "hqq", 8: "hqq", 16: "none"},
                   "bnb": {4: "nf4", 8: "int8", 16: "none"}, "none": {16: "none"}}
LEGACY_HQQ_AXIS = 1  # hqq 0.2's default, which those plans were quantized with
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


def check_quantizer(quantizer: str, bits: int, where: str = "plan") -> None:
    """PlanError naming ``where`` unless ``quantizer`` can store ``bits``-bit weights."""
    if quantizer not in QUANTIZERS:
        raise PlanError(f"{where}: quantizer {quantizer!r} unknown; expected one of {list(QUANTIZERS)}")
    if bits not in QUANTIZER_BITS[quantizer]:
        can = ", ".join(str(b) for b in QUANTIZER_BITS[quantizer])
        raise PlanError(f"{where}: quantizer {quantizer!r} cannot store {bits}-bit weights (it stores {can} bits)")


def quantizer_map(spec: Mapping | None = None, key: str = "quantizers") -> dict[int, str]:
    """A complete bit-width -> quantizer map: ``spec`` (keys may be strings, as in JSON) on top of
    :data:`DEFAULT_QUANTIZER_MAP`; PlanError naming ``key.<bits>`` for an impossible pair."""
    out = dict(DEFAULT_QUANTIZER_MAP)
    for b, q in (spec or {}).items():
        try:
            bits = int(b)
        except (TypeError, ValueError):
            raise PlanError(f"{key}: key {b!r} is not a bit-width; expected one of {list(ALLOWED_BITS)}") from None
        if bits not in ALLOWED_BITS:
            raise PlanError(f"{key}: bit-width {bits} not allowed; expected one of {list(ALLOWED_BITS)}")
        check_quantizer(q, bits, where=f"{key}.{bits}")
        out[bits] = q
    return out


def quantizers_for(bits: Sequence[int], qmap: Mapping | None = None) -> tuple[str, ...]:
    """Each block's quantizer: the one ``qmap`` (a quantizer map, default HQQ) names for its bits."""
    m = quantizer_map(qmap)
    return tuple(m[int(b)] for b in bits)


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
    """Per-block bit-widths, quantizers and LoRA ranks, plus the HQQ group size, axis and metadata
    precision (``meta_bits``: 16 or 8 bits per scale and zero).

    ``quantizers`` defaults to :data:`DEFAULT_QUANTIZER_MAP` applied to ``bits`` (HQQ, dense at 16).
    """

    bits: tuple[int, ...]
    ranks: tuple[int, ...]
    quantizers: tuple[str, ...] | None = None
    group_size: int = 128
    hqq_axis: int = DEFAULT_HQQ_AXIS
    granularity: str = "block"
    meta: Mapping = field(default_factory=dict, compare=False, hash=False)
    meta_bits: int = DEFAULT_META_BITS

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
        if self.quantizers is None:
            object.__setattr__(self, "quantizers", quantizers_for(self.bits))
        object.__setattr__(self, "quantizers", tuple(self.quantizers))
        if len(self.quantizers) != len(self.bits):
            raise PlanError(f"plan has {len(self.bits)} blocks but {len(self.quantizers)} quantizers; "
                            "expected one per block")
        for i, (b, q) in enumerate(zip(self.bits, self.quantizers, strict=True)):
            check_quantizer(q, b, where=f"plan block {i}")
        if isinstance(self.group_size, bool) or not isinstance(self.group_size, int) or self.group_size <= 0:
            raise PlanError(f"plan group_size must be a positive integer, got {self.group_size!r}")
        if self.hqq_axis not in HQQ_AXES or isinstance(self.hqq_axis, bool):
            raise PlanError(f"plan hqq_axis must be 0 or 1, got {self.hqq_axis!r}")
        if self.meta_bits not in META_BITS or isinstance(self.meta_bits, bool):
            raise PlanError(f"plan meta_bits must be one of {list(META_BITS)}, got {self.meta_bits!r}")
        if self.granularity != "block":
            raise PlanError(f"plan granularity '{self.granularity}' unsupported; expected 'block'")

    # -- constructors -----------------------------------------------------------------
    @classmethod
    def uniform(cls, n_blocks: int, bits: int, rank: int, quantizer: str | None = None,
                group_size: int = 128, hqq_axis: int = DEFAULT_HQQ_AXIS, meta_bits: int = DEFAULT_META_BITS) -> Plan:
        """The same bits, rank and quantizer (default: the default map's for ``bits``) in every block."""
        q = quantizer or DEFAULT_QUANTIZER_MAP[int(bits)]
        return cls((bits,) * n_blocks, (rank,) * n_blocks, (q,) * n_blocks, group_size, hqq_axis,
                   meta_bits=meta_bits)

    @classmethod
    def mapped(cls, bits: Sequence[int], ranks: Sequence[int], qmap: Mapping | None = None,
               group_size: int = 128, hqq_axis: int = DEFAULT_HQQ_AXIS, meta: Mapping | None = None,
               meta_bits: int = DEFAULT_META_BITS) -> Plan:
        """A plan whose blocks take the quantizer ``qmap`` names for their bits."""
        return cls(tuple(bits), tuple(ranks), quantizers_for(bits, qmap), group_size, hqq_axis, meta=dict(meta or {}),
                   meta_bits=meta_bits)

    @classmethod
    def from_dict(cls, d: Mapping, source: str = "plan") -> Plan:
        """Build from the plan JSON contract; ``source`` names the file in error messages.

        Files from before per-block quantizers carry ``"backend"`` instead of ``"quantizers"``: hqq
        means HQQ on every quantized block (with hqq 0.2's default axis 1 unless ``hqq_axis`` is
        given), bnb means NF4 at 4 bits and int8 at 8, none means dense.
        """
        if not isinstance(d, Mapping):
            raise PlanError(f"{source}: expected a JSON object with 'bits' and 'ranks'")
        missing = [k for k in ("bits", "ranks") if k not in d]
        if missing:
            raise PlanError(f"{source}: missing key(s) {missing}; expected 'bits' and 'ranks' lists")
        known = {"bits", "ranks", "quantizers", "backend", "group_size", "hqq_axis", "granularity", "meta",
                 "meta_bits"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise PlanError(f"{source}: unknown key(s) {unknown}; allowed keys are {sorted(known)}")
        for k in ("bits", "ranks"):
            if not isinstance(d[k], list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in d[k]):
                raise PlanError(f"{source}: '{k}' must be a list of integers")
        quantizers, axis = d.get("quantizers"), d.get("hqq_axis")
        try:
            if "backend" in d:
                if quantizers is not None:
                    raise PlanError("give 'quantizers' (one per block) or the old 'backend', not both")
                legacy = LEGACY_BACKENDS.get(d["backend"])
                if legacy is None:
                    raise PlanError(f"plan backend {d['backend']!r} unknown; expected one of {list(LEGACY_BACKENDS)} "
                                    f"(or, better, 'quantizers': one of {list(QUANTIZERS)} per block)")
                off = sorted({b for b in d["bits"] if b not in legacy})
                if off:
                    raise PlanError(f"backend {d['backend']!r} cannot store bits {off}; it stores "
                                    f"{sorted(legacy)}")
                quantizers = [legacy[b] for b in d["bits"]]
                axis = LEGACY_HQQ_AXIS if axis is None else axis
            if quantizers is not None and (not isinstance(quantizers, list)
                                           or not all(isinstance(q, str) for q in quantizers)):
                raise PlanError("'quantizers' must be a list of quantizer names, one per block")
            return cls(tuple(d["bits"]), tuple(d["ranks"]), None if quantizers is None else tuple(quantizers),
                       group_size=d.get("group_size", 128), hqq_axis=DEFAULT_HQQ_AXIS if axis is None else axis,
                       granularity=d.get("granularity", "block"), meta=dict(d.get("meta", {})),
                       meta_bits=d.get("meta_bits", DEFAULT_META_BITS))
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
        d = {"bits": list(self.bits), "ranks": list(self.ranks), "quantizers": list(self.quantizers),
             "granularity": self.granularity, "group_size": self.group_size, "hqq_axis": self.hqq_axis}
        if self.meta_bits != DEFAULT_META_BITS:  # left out at the default, so older plans keep their hash
            d["meta_bits"] = self.meta_bits
        if with_meta and self.meta:
            d["meta"] = dict(self.meta)
        return d

    def save(self, path: str | os.PathLike) -> Path:
        return atomic_write_json(path, self.to_dict())

    @property
    def hash(self) -> str:
        """Stable content hash (16 hex chars) over bits, ranks, quantizers, group size, HQQ axis and
        (when not 16) meta_bits; meta excluded."""
        canon = json.dumps(self.to_dict(with_meta=False), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()[:16]

    # -- queries ----------------------------------------------------------------------
    @property
    def n_blocks(self) -> int:
        return len(self.bits)

    @property
    def quantizer_label(self) -> str:
        """The quantizers the plan uses, e.g. ``nf4`` or ``hqq+int8`` (dense blocks left out unless alone)."""
        used = [q for q in QUANTIZERS if q in self.quantizers and q != "none"]
        return "+".join(used) or "none"

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
        if "bits" in changes and "quantizers" not in changes:  # new bits: the default map's quantizers
            d["quantizers"] = None
        return Plan(tuple(d["bits"]), tuple(d["ranks"]), None if d["quantizers"] is None else tuple(d["quantizers"]),
                    d["group_size"], d["hqq_axis"], d["granularity"], d.get("meta", {}),
                    d.get("meta_bits", DEFAULT_META_BITS))

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

    def module_quantizers(self) -> dict[str, str]:
        """Module path -> quantizer for every projection."""
        return {projection_module(b, p): q for b, q in enumerate(self.quantizers) for p in PROJECTIONS}

    def module_ranks(self) -> dict[str, int]:
        """Module path -> LoRA rank for every projection."""
        return {projection_module(b, p): r for b, r in enumerate(self.ranks) for p in PROJECTIONS}


def _module_regex(block: int, proj: str) -> str:
    # PEFT matches pattern keys with re.match(rf"(.*\.)?({key})$", name); escaping the dots keeps
    # "layers.1." from matching "layers.11." and anchors the key to exactly one module.
    return re.escape(projection_module(block, proj))
