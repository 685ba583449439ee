"""Atomic file writes: write to a temporary file beside the target, fsync, then rename.

A reader (or a resumed run after kill -9) therefore sees either the old file or the complete new
one, never a partial JSON/TSV.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates 0600 files; results on a shared filesystem must be readable by the group.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """Write ``obj`` as JSON (sorted keys, trailing newline) atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=True, default=_jsonable) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> Path:
    """Write one JSON object per line atomically."""
    lines = [json.dumps(r, sort_keys=True, ensure_ascii=False, default=_jsonable) for r in records]
    return atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))


def atomic_write_tsv(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Write a tab-separated table with a header row atomically."""
    out = ["\t".join(header)]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"{path}: row has {len(row)} fields, header has {len(header)}")
        out.append("\t".join(_cell(v) for v in row))
    return atomic_write_text(path, "\n".join(out) + "\n")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _cell(v: Any) -> str:
    if hasattr(v, "item") and not isinstance(v, str):  # numpy scalars: plain Python value, not repr
        v = v.item()
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _jsonable(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist"):  # numpy scalars/arrays
        return o.tolist()
    if isinstance(o, set | frozenset):
        return sorted(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Records of a JSON-lines file written by a pipeline step; an empty file is an empty list
    (a phase with no candidates), a broken line an error naming the file and line."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {lineno}: invalid JSON ({e.msg}); expected one record per line") from e
    return out


@contextmanager
def atomic_dir(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Fill a directory atomically: yields a hidden sibling to write into, which replaces ``out_dir``
    (two renames) only when the block finishes. A reader, or a run resumed after kill -9, sees the
    old directory or the complete new one, never a half-written one; copies a killed writer left
    behind are removed first (Snakemake never writes one output directory twice at once)."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    for pattern in (f".{out_dir.name}.tmp-*", f".{out_dir.name}.old-*"):
        for stale in out_dir.parent.glob(pattern):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    tmp.mkdir()
    try:
        yield tmp
        umask = _umask()
        for path in tmp.rglob("*"):  # temp-file writers create 0600 files; shared trees need the umask
            if path.is_file():
                path.chmod(0o666 & ~umask)
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        if out_dir.exists():
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
