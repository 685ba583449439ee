"""Readers for instruction datasets (JSONL, Alpaca JSON lists, hub ids), validated at the boundary.

Every error is a ``DatasetError`` naming the file and the line (JSONL) or item (JSON list) and
what was expected, so a user fixes their data without reading a traceback.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from autoqra.errors import DatasetError

REQUIRED_FIELDS: tuple[str, ...] = ("instruction", "output")
# Fields of our record schema that must be strings whenever they are present.
STRING_FIELDS: tuple[str, ...] = ("id", "skill", "instruction", "input", "output", "answer")
# Column names used by common instruction sets on the hub, mapped to our schema.
_HUB_COLUMNS = {
    "instruction": ("instruction", "prompt", "question"),
    "input": ("input", "context"),
    "output": ("output", "response", "answer", "completion"),
}


def _read_text(path: Path) -> str:
    """File contents as UTF-8; a bad byte is reported with its line number."""
    if not path.is_file():
        raise DatasetError(f"{path}: dataset file not found (expected a .jsonl or .json file)")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DatasetError(f"{path}: line {line}: invalid UTF-8 byte 0x{raw[e.start]:02x} at "
                           f"offset {e.start} (expected UTF-8 text)") from e
    if not text.strip():
        raise DatasetError(f"{path}: file is empty (expected at least one record)")
    return text.removeprefix("\ufeff")  # tolerate a BOM written by some editors


def validate_records(records: Sequence[Any], source: str,
                     required: Sequence[str] = REQUIRED_FIELDS,
                     locations: Sequence[str] | None = None) -> list[dict]:
    """Check records are objects with non-empty string ``required`` fields; return them as dicts."""
    if not records:
        raise DatasetError(f"{source}: no records (expected at least one)")
    out = []
    for i, rec in enumerate(records):
        where = f"{source}: {locations[i] if locations else f'record {i}'}"
        if not isinstance(rec, Mapping):
            raise DatasetError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        for key in required:
            if key not in rec:
                raise DatasetError(f"{where}: missing required field {key!r}")
            if isinstance(rec[key], str) and not rec[key].strip():
                raise DatasetError(f"{where}: field {key!r} is empty (expected a non-empty string)")
        for key in STRING_FIELDS:
            if key in rec and not isinstance(rec[key], str):
                raise DatasetError(f"{where}: field {key!r} must be a string, "
                                   f"got {type(rec[key]).__name__}")
        if "choices" in rec:
            _check_choices(rec, where)
        out.append(dict(rec))
    return out


def _check_choices(rec: Mapping[str, Any], where: str) -> None:
    choices, label = rec["choices"], rec.get("label")
    if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices) or not choices:
        raise DatasetError(f"{where}: field 'choices' must be a non-empty list of strings")
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(choices):
        raise DatasetError(f"{where}: field 'label' must be an index into 'choices' "
                           f"(0..{len(choices) - 1}), got {label!r}")


def _parse_jsonl(path: Path, text: str) -> tuple[list[Any], list[str]]:
    records, locations = [], []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue  # blank lines (e.g. a trailing one) carry no record
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise DatasetError(f"{path}: line {lineno}: invalid JSON ({e.msg} at column {e.colno}); "
                               "expected one JSON object per line") from e
        locations.append(f"line {lineno}")
    return records, locations


def load_jsonl(path: str | os.PathLike, required: Sequence[str] = ()) -> list[dict]:
    """Read a JSON-lines file of objects; ``required`` fields must be non-empty strings."""
    path = Path(path)
    records, locations = _parse_jsonl(path, _read_text(path))
    return validate_records(records, str(path), required, locations)


def _normalise(records: list[dict]) -> list[dict]:
    """Alpaca records with ``input`` defaulting to "" (other schema fields kept when present)."""
    keep = ("id", "skill", "answer", "choices", "label")
    return [{"instruction": r["instruction"], "input": r.get("input") or "", "output": r["output"],
             **{k: r[k] for k in keep if k in r}} for r in records]


def load_alpaca(path: str | os.PathLike) -> list[dict]:
    """Read an Alpaca-format dataset (JSON list or JSON lines) of instruction/input/output."""
    path = Path(path)
    text = _read_text(path)
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{path}: line {e.lineno}: invalid JSON ({e.msg} at column "
                               f"{e.colno}); expected a JSON list of objects") from e
        locations = [f"item {i}" for i in range(len(data))]
    else:
        data, locations = _parse_jsonl(path, text)
    return _normalise(validate_records(data, str(path), REQUIRED_FIELDS, locations))


def load_hub(dataset_id: str, split: str = "train", name: str | None = None) -> list[dict]:
    """Load a hub dataset with ``datasets.load_dataset`` and convert it to the record schema."""
    try:
        from datasets import load_dataset
    except ImportError as e:
        raise DatasetError(f"dataset {dataset_id!r}: the 'datasets' package is not installed") from e
    try:
        ds = load_dataset(dataset_id, name, split=split)
    except Exception as e:  # datasets raises many types; all mean "cannot get it"
        offline = any(os.environ.get(v) == "1" for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
        why = "offline mode is set (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE)" if offline else \
            "the Hugging Face hub is unreachable or the id/split does not exist"
        raise DatasetError(f"cannot load hub dataset {dataset_id!r} (split {split!r}): {why}. "
                           f"Use data.source 'alpaca_file' with a local copy instead. "
                           f"[{type(e).__name__}: {e}]") from e
    columns = {}
    for field, candidates in _HUB_COLUMNS.items():
        found = next((c for c in candidates if c in ds.column_names), None)
        if found is None and field != "input":
            raise DatasetError(f"hub dataset {dataset_id!r}: no column for {field!r}; expected one of "
                               f"{list(candidates)}, found {ds.column_names}")
        columns[field] = found
    rows = [{f: (row[c] if c else "") for f, c in columns.items()} for row in ds]
    source = f"hub dataset {dataset_id!r} split {split!r}"
    return _normalise(validate_records(rows, source, REQUIRED_FIELDS,
                                       [f"row {i}" for i in range(len(rows))]))
