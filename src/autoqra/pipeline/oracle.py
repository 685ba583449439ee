"""The oracle method (config ``methods.<name>: {plan: oracle}``): the exact optimum of the additive
per-block damage model under the budget (``autoqra.baselines.oracle_genome``), rank fixed.

Where the numbers come from (decided here, documented in the README):
- per-block **shares** from Stage 0's raw ``I_q`` (JSD of block ℓ alone at the lowest rung, priors.tsv);
- **rung damages** ``d(b)`` (nats/token the *uniform* b-bit model loses on held-out text) from the
  method's ``damages`` key when given, else from the quantizer bench JSON
  (``benchmarks/results/quantizer_bench.json``, ``damage_heldout`` of the rows matching the search
  space's quantizer map, group size and HQQ axis). Stage 0 cannot supply them: it measures only the
  lowest rung, one block at a time. A ladder whose rung the bench has not measured (e.g. a new
  3-bit packer) needs ``damages`` in the config; the error says so.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from autoqra.baselines import block_damages, oracle_genome
from autoqra.errors import ConfigError
from autoqra.io import read_json
from autoqra.search.space import SearchSpace

DEFAULT_BENCH = Path(__file__).resolve().parents[3] / "benchmarks" / "results" / "quantizer_bench.json"


def bench_key(quantizer: str, bits: int, group_size: int, meta_bits: int) -> str:
    """The quantizer bench's row key of one rung (the bench measures HQQ at axis 0, exactly packed)."""
    return f"hqq-g{group_size}-m{meta_bits}-b{bits}" if quantizer == "hqq" else f"{quantizer}-b{bits}"


def bench_rung_damages(bench_json: str | os.PathLike, space: SearchSpace,
                       metric: str = "damage_heldout") -> dict[int, float]:
    """Measured damage of each rung of ``space`` (uniform model, nats/token) from the bench JSON."""
    path = Path(bench_json)
    if not path.is_file():
        raise ConfigError(f"oracle: quantizer bench {path} not found; give the method's 'damages' "
                          f"({{bits: nats/token}}) or run benchmarks/quantizer_bench.py")
    rows = {r["key"]: r for r in read_json(path)["rows"] if r.get("status", "ok") == "ok"}
    out, missing = {}, []
    for b in space.bits:
        q = space.quantizers[b]
        if q == "none":
            out[b] = 0.0
            continue
        key = bench_key(q, b, space.group_size, space.meta_bits)
        if key not in rows or (q == "hqq" and rows[key].get("hqq_axis", 0) != space.hqq_axis) or rows[key].get(metric) is None:
            missing.append(key)
        else:
            out[b] = float(rows[key][metric])
    if missing:
        raise ConfigError(f"oracle: {path} has no {metric} for {missing}; give the method's 'damages' "
                          f"({{bits: nats/token}}) for this ladder")
    return out


def rung_damages(spec: Mapping[str, Any], space: SearchSpace) -> tuple[dict[int, float], str]:
    """(damage per rung, where it came from) for an oracle method's config entry."""
    if spec.get("damages"):
        dmg = {int(k): float(v) for k, v in dict(spec["damages"]).items()}
        return dmg, "config"
    bench = spec.get("damage_bench") or DEFAULT_BENCH
    return bench_rung_damages(bench, space), str(bench)


def oracle_plan_genome(spec: Mapping[str, Any], space: SearchSpace, iq_raw: np.ndarray,
                       ref_rank: int | None) -> tuple[np.ndarray, dict]:
    """The oracle's genome and what to record with it (damage, bound, exactness, sources)."""
    rank = spec.get("rank") or ref_rank or space.ranks[len(space.ranks) // 2]
    dmg, source = rung_damages(spec, space)
    table = block_damages(iq_raw, dmg, space.bits)
    g, info = oracle_genome(space, table, int(rank))
    uniform = {b: float(table[:, i].sum()) for i, b in enumerate(space.bits)
               if space.feasible(space.uniform(b, int(rank)))}
    return g, {**info, "rung_damages": {str(b): v for b, v in dmg.items()}, "damage_source": source,
               "model_damage_of_feasible_uniform": {str(b): v for b, v in uniform.items()},
               "bit_counts": {str(b): int((g[0] == i).sum()) for i, b in enumerate(space.bits)}}
