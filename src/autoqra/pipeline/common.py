"""Shared constructors for stage steps: the search space of a model, the evaluator, the priors."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from autoqra.io import read_json
from autoqra.memory import MemoryModel, ModelShape
from autoqra.plan import DEFAULT_HQQ_AXIS, DEFAULT_META_BITS
from autoqra.search.space import SearchSpace


def search_space(model_dir: str | os.PathLike, space_cfg: Mapping[str, Any], budget_json: str | os.PathLike) -> SearchSpace:
    """The model's search space (the config's quantizer map, group size, HQQ axis and metadata bits) with the budget
    resolved by rule memory_budget."""
    shape = ModelShape.from_path(model_dir)
    mm = MemoryModel(shape, space_cfg.get("quantizers"), space_cfg["group_size"],
                     space_cfg.get("hqq_axis", DEFAULT_HQQ_AXIS), space_cfg.get("meta_bits", DEFAULT_META_BITS))
    budget = float(read_json(budget_json)["plan_bytes"])
    return SearchSpace.from_memory_model(mm, space_cfg["bits"], space_cfg["ranks"], budget)


def evolution_settings(search_cfg: Mapping[str, Any], variant: Mapping[str, Any]):
    """Stage-1 settings of one variant: the ``search`` section with the variant's switches on top."""
    from autoqra.search.evolution import EvolutionSettings

    keys = set(EvolutionSettings.__dataclass_fields__)
    return EvolutionSettings(**{k: v for k, v in {**search_cfg, **variant}.items() if k in keys})


def trust_region_settings(refine_cfg: Mapping[str, Any], **override: Any):
    """Stage-2 settings from the ``refine`` section (``override`` replaces keys, e.g. iterations=0)."""
    from autoqra.search.trust_region import TrustRegionSettings

    keys = set(TrustRegionSettings.__dataclass_fields__)
    return TrustRegionSettings(**{**{k: v for k, v in refine_cfg.items() if k in keys}, **override})


def load_priors(priors_tsv: str | os.PathLike | None, n_blocks: int,
                norm: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(I_q, I_r) from Stage 0, normalised by ``autoqra.search.priors.normalise_priors`` (``norm``,
    default the measured choice) from the raw columns; flat priors when none are given. Files
    without raw columns fall back to their normalised ones."""
    if priors_tsv is None:
        return np.full(n_blocks, 0.5), np.full(n_blocks, 0.5)
    import csv

    from autoqra.search.priors import DEFAULT_NORM, normalise_priors
    from autoqra.sensitivity import read_priors

    iq, ir = read_priors(priors_tsv)  # validates the file (blocks, ranges), names it in errors
    if len(iq) != n_blocks:
        raise ValueError(f"{priors_tsv}: priors for {len(iq)} blocks, the model has {n_blocks}")
    with open(priors_tsv, encoding="utf-8", newline="") as fh:
        rows = sorted(csv.DictReader(fh, delimiter="\t"), key=lambda r: int(r["block"]))
    if rows and {"iq_raw", "ir_raw"} <= set(rows[0]):
        try:
            iq = np.array([float(r["iq_raw"]) for r in rows])
            ir = np.array([float(r["ir_raw"]) for r in rows])
        except ValueError as e:
            raise ValueError(f"{priors_tsv}: iq_raw/ir_raw must be numbers ({e})") from None
    how = norm or DEFAULT_NORM
    return normalise_priors(iq, how), normalise_priors(ir, how)


def reference_rank(budget_json: str | os.PathLike, space: SearchSpace) -> int | None:
    """The rank of the budget's reference plan (config budget.rank) if it is on the rank ladder."""
    rank = (read_json(budget_json).get("spec") or {}).get("rank")
    return int(rank) if rank is not None and int(rank) in space.ranks else None


def load_raw_iq(priors_tsv: str | os.PathLike, n_blocks: int) -> np.ndarray:
    """The raw ``I_q`` (JSD in nats, column ``iq_raw`` of priors.tsv) in block order."""
    import csv

    from autoqra.errors import DatasetError

    path = Path(priors_tsv)
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        by_block = {int(r["block"]): float(r["iq_raw"]) for r in rows}
    except FileNotFoundError:
        raise DatasetError(f"{path}: priors file not found (run the sensitivity stage first)") from None
    except (KeyError, TypeError, ValueError):
        raise DatasetError(f"{path}: expected columns 'block' and 'iq_raw' with numbers") from None
    if sorted(by_block) != list(range(n_blocks)) or not all(np.isfinite(v) and v >= 0 for v in by_block.values()):
        raise DatasetError(f"{path}: expected one finite iq_raw >= 0 per block 0..{n_blocks - 1}")
    return np.array([by_block[b] for b in range(n_blocks)])


def make_evaluator(model_dir: str | os.PathLike, data_dir: str | os.PathLike, cache_dir: str | os.PathLike,
                   params: Mapping[str, Any]):
    """An Evaluator from the config sections passed as rule params (training, evaluation, fidelities)."""
    from autoqra.evaluate import EvalSettings, Evaluator
    from autoqra.train import Fidelity, TrainSettings

    seq = int(params["max_seq_len"])
    train = TrainSettings(**params["training"], max_seq_len=seq, progress=False)
    ev_cfg = dict(params["evaluation"])
    inject = ev_cfg.pop("inject_failure", None)
    ev = EvalSettings(**ev_cfg, max_seq_len=seq)
    fids = {name: Fidelity.from_dict(name, spec) for name, spec in params["fidelities"].items()}
    return Evaluator(model_dir, data_dir, cache_dir, fidelities=fids, train=train, eval=ev,
                     lora_dropout=params["lora_dropout"], alpha_per_rank=params["alpha_per_rank"],
                     device=params.get("device"), inject_failure=inject)


def evaluator_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config sections an Evaluator depends on (passed to rules as one param)."""
    return {"training": dict(config["training"]), "evaluation": dict(config["evaluation"]),
            "fidelities": {k: dict(v) for k, v in config["fidelities"].items()},
            "max_seq_len": config["data"]["max_seq_len"],
            "lora_dropout": config["search_space"]["lora_dropout"],
            "alpha_per_rank": config["search_space"]["lora_alpha_per_rank"]}


def shard_of(items: list, shard: int, shards: int) -> list[int]:
    """Indices of ``items`` that shard ``shard`` of ``shards`` evaluates (round robin)."""
    return [i for i in range(len(items)) if i % shards == shard]


def as_path(p: Any) -> Path | None:
    return None if p in (None, "") else Path(p)
