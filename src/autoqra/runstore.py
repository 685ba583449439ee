"""Runs shared between methods that return the same plan (DESIGN §2: a run is a function of its
inputs). Two methods whose plans hash the same, fine-tuned on the same seed with the same settings,
data, base model, device and library versions, are the *same run*: training is deterministic for a
seed, so computing it twice only spends CPU-hours (at the study's b4 budget Sequential, the oracle
and random search returned QLoRA's plan: 13 of 30 method-seeds were copies). The final fine-tuning and its lm-eval run
therefore go through a content-addressed store in the shared ``cache_dir``:

``<cache_dir>/runs/<kind>/<key>/`` holds the files of one run (``kind``: ``finetune`` or ``lm_eval``),
with ``identity.json`` (everything the key hashes) and ``origin.json`` (which method and job produced
it). The first job to claim a key computes the run and stores a copy; every later job with the same
key, in the same pipeline or another (the study's budgets share one ``cache_dir``), copies the files
and records where they came from. Claims hold an exclusive ``flock`` on ``<key>.lock``, so two
concurrent jobs with the same key run it once: the second waits for the first and then copies.
A failed run stores nothing; an entry is complete only when its directory has been renamed into place.

Reuse is exact by construction, not approximate: what a job copies is what the same job would have
written, except for the fields naming the method (``retag``), and ``shared_from`` says so.
``tests/unit/test_runstore.py`` checks that recomputing a key gives byte-identical files.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from autoqra.io import atomic_dir, atomic_write_json, read_json
from autoqra.models.sources import sha256_file

RUN_FORMAT = 1  # bump when what a stored run holds, or how its key is made, changes
_LIBRARIES = ("torch", "transformers", "peft", "bitsandbytes", "hqq", "lm_eval")


def tree_sha(path: str | os.PathLike) -> str:
    """sha256 over the relative names and bytes of every file under a directory (or of one file)."""
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    h = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file()):
        h.update(str(f.relative_to(p)).encode() + b"\0" + sha256_file(f).encode() + b"\0")
    return h.hexdigest()


def library_versions() -> dict[str, str | None]:
    """Versions of the libraries a run's numbers depend on (a changed library never reuses a run)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in _LIBRARIES:
        try:
            out[name] = version(name.replace("_", "-") if name == "lm_eval" else name)
        except PackageNotFoundError:
            out[name] = None
    return out


def run_key(identity: Mapping[str, Any]) -> str:
    """24 hex chars of sha256 over the canonical JSON of ``identity`` (and the store's format)."""
    canon = json.dumps({"run_format": RUN_FORMAT, **identity}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canon.encode()).hexdigest()[:24]


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[float]:
    """An exclusive flock on ``lock_path`` for the block; yields the seconds spent waiting for it."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield time.perf_counter() - t0
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class RunStore:
    """The store of shared runs under ``<cache_dir>/runs``."""

    def __init__(self, cache_dir: str | os.PathLike):
        self.root = Path(cache_dir) / "runs"

    def entry(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def run(self, kind: str, identity: Mapping[str, Any], outputs: Mapping[str, str | os.PathLike],
            produce: Callable[[], Any], *, origin: Mapping[str, Any],
            retag: Callable[[str, Path, dict], None] | None = None) -> dict[str, Any]:
        """Make ``outputs`` (name -> file or directory path) exist: copied from the store when it holds
        ``identity``'s run, else written by ``produce()`` and then stored. ``retag(name, path, origin)``
        rewrites a copied output for this job (e.g. its method name; ``origin``: the stored job's).
        Returns what happened: ``shared``, ``key``, ``origin`` (the job that computed the run),
        ``wait_seconds``."""
        key = run_key(identity)
        entry = self.entry(kind, key)
        with _locked(self.root / kind / f"{key}.lock") as waited:
            if (entry / "origin.json").is_file():
                stored = read_json(entry / "origin.json")
                for name, dest in outputs.items():
                    _copy(entry / name, Path(dest))
                    if retag is not None:
                        retag(name, Path(dest), stored)
                return {"shared": True, "key": key, "origin": stored, "wait_seconds": waited}
            produce()
            with atomic_dir(entry) as tmp:
                for name, src in outputs.items():
                    _copy(Path(src), tmp / name)
                atomic_write_json(tmp / "identity.json", {"run_format": RUN_FORMAT, **identity})
                atomic_write_json(tmp / "origin.json", dict(origin))
            return {"shared": False, "key": key, "origin": dict(origin), "wait_seconds": waited}


def _copy(src: Path, dest: Path) -> None:
    """Copy a file or a directory tree to ``dest`` (a directory replaces any old one atomically)."""
    if src.is_dir():
        with atomic_dir(dest) as tmp:
            shutil.copytree(src, tmp, dirs_exist_ok=True)
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.copy-{os.getpid()}")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)


def retag_json(fields: Mapping[str, Any]) -> Callable[[str, Path, dict], None]:
    """A ``retag`` that sets ``fields`` (e.g. ``{"method": m}``) and ``shared_from`` (the stored origin)
    in a copied JSON file, or in the ``manifest.json`` of a copied directory."""
    def retag(name: str, path: Path, origin: dict) -> None:
        f = path / "manifest.json" if path.is_dir() else path
        if f.suffix == ".json" and f.is_file():
            atomic_write_json(f, {**read_json(f), **fields, "shared_from": origin})
    return retag
