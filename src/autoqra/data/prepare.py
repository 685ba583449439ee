"""The data-preparation stage: build train/validation/test JSONL files and their manifest."""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from autoqra.data.loaders import REQUIRED_FIELDS, load_alpaca, load_hub, load_jsonl
from autoqra.data.synthetic import SPLITS, check_skills, generate_synthetic
from autoqra.errors import ConfigError, DatasetError
from autoqra.io import atomic_write_jsonl, read_json
from autoqra.manifest import write_manifest
from autoqra.models.sources import sha256_file

SOURCES = ("synthetic", "alpaca_file", "hub")
DEFAULT_SKILL = "general"  # skill tag of records from files and the hub


def _size(spec: Mapping[str, Any], key: str, allow_none: bool = False) -> int | None:
    value = spec.get(key)
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        expected = "a non-negative integer" + (" or null (the rest)" if allow_none else "")
        raise ConfigError(f"data.{key}: expected {expected}, got {value!r}")
    return value


def split_records(records: list[dict], seed: int, n_train: int | None, n_val: int,
                  n_test: int, source: str) -> dict[str, list[dict]]:
    """Deduplicate, shuffle with ``seed`` and cut into splits (test and validation first)."""
    unique: dict[tuple[str, str], dict] = {}
    for r in records:  # duplicates would leak held-out prompts into training
        unique.setdefault((r["instruction"], r.get("input", "")), r)
    pool = list(unique.values())
    random.Random(seed).shuffle(pool)
    need = n_val + n_test + (n_train if n_train is not None else 1)
    if len(pool) < need:
        raise DatasetError(f"{source}: {len(pool)} unique records, but the splits need {need} "
                           f"(n_train={n_train}, n_val={n_val}, n_test={n_test})")
    test, val = pool[:n_test], pool[n_test:n_test + n_val]
    rest = pool[n_test + n_val:]
    train = rest if n_train is None else rest[:n_train]
    out = {}
    for split, recs in zip(SPLITS, (train, val, test), strict=True):
        out[split] = [{**r, "id": f"{split}-{i}", "skill": r.get("skill") or DEFAULT_SKILL,
                       "answer": r.get("answer") or r["output"].strip()}
                      for i, r in enumerate(recs)]
    return out


def prepare_data(spec: Mapping[str, Any], out_dir: str | os.PathLike, seed: int) -> dict:
    """Write ``train/validation/test.jsonl`` and ``manifest.json`` to ``out_dir``; return the manifest."""
    source = spec.get("source", "synthetic")
    if source not in SOURCES:
        raise ConfigError(f"data.source: expected one of {list(SOURCES)}, got {source!r}")
    n_val, n_test = _size(spec, "n_val"), _size(spec, "n_test")
    inputs: dict[str, Any] = {}
    if source == "synthetic":
        n_train = _size(spec, "n_train")
        try:
            skills = check_skills(spec.get("skills"))
        except ValueError as e:
            raise ConfigError(f"data.skills: {e}") from e
        try:
            splits = generate_synthetic(seed, n_train, n_val, n_test, skills)
        except ValueError as e:  # a skill ran out of unique examples for the requested sizes
            raise ConfigError(f"data.n_train/n_val/n_test: {e}") from e
    else:
        n_train = _size(spec, "n_train", allow_none=True)
        if source == "alpaca_file":
            path = spec.get("path")
            if not path:
                raise ConfigError("data.path: required when data.source is 'alpaca_file'")
            records = load_alpaca(path)
            inputs = {"path": str(path), "sha256": sha256_file(path)}
            where = str(path)
        else:
            dataset_id = spec.get("id")
            if not dataset_id:
                raise ConfigError("data.id: required when data.source is 'hub'")
            hub_split = spec.get("split", "train")
            records = load_hub(dataset_id, split=hub_split)
            inputs = {"id": dataset_id, "split": hub_split}
            where = f"hub dataset {dataset_id!r}"
        splits = split_records(records, seed, n_train, n_val, n_test, where)

    out = Path(out_dir)
    files = {}
    for split in SPLITS:
        path = atomic_write_jsonl(out / f"{split}.jsonl", splits[split])
        files[split] = {"file": path.name, "sha256": sha256_file(path)}
    general = None
    if spec.get("general_text"):  # general English text: a part for the search, a held-out benchmark part
        from autoqra.data.general_text import general_parts

        parts, general = general_parts(spec["general_text"])
        for part, recs in parts.items():
            path = atomic_write_jsonl(out / f"general_{part}.jsonl", recs)
            files[f"general_{part}"] = {"file": path.name, "sha256": sha256_file(path)}
    extra = {
        "counts": {s: len(splits[s]) for s in SPLITS},
        "general_text": general,
        "skills": {s: dict(sorted(Counter(r["skill"] for r in splits[s]).items())) for s in SPLITS},
        "files": files,
    }
    manifest_path = write_manifest(out / "manifest.json", "data_prepare", config=dict(spec),
                                   seed=seed, inputs=inputs, extra=extra)
    return read_json(manifest_path)


def load_split(data_dir: str | os.PathLike, split: str) -> list[dict]:
    """Read one prepared split back, validating every record."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    path = Path(data_dir) / f"{split}.jsonl"
    if not path.is_file():
        raise DatasetError(f"{path}: split file not found (run the data_prepare stage first)")
    if path.stat().st_size == 0:
        return []  # a split of size 0 was requested
    return load_jsonl(path, required=REQUIRED_FIELDS + ("answer",))
