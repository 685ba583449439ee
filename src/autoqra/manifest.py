"""Provenance written beside every output: config, seed, package versions, git SHA, device, time.

Follows peft's ``method_comparison`` habit: a results file is useless without the exact versions
and settings that produced it.
"""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from autoqra.io import atomic_write_json

TRACKED_PACKAGES = (
    "autoqra", "torch", "transformers", "tokenizers", "peft", "accelerate", "safetensors", "hqq",
    "bitsandbytes", "datasets", "lm_eval", "optuna", "numpy", "scipy", "pandas", "snakemake",
)


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str | None]:
    """Installed versions of ``names`` (None where not installed); never imports the packages."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def code_sha(*parts: str) -> str:
    """Identity of library code (files or packages under ``src/autoqra``, e.g. ``"models"``,
    ``"io.py"``): 16 hex characters over their paths and bytes. Snakemake's between-workflow
    cache hashes a rule's script and params, not the library it calls; passing this as a param
    makes changed library code a different cache entry (and re-runs the rule)."""
    src = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for part in parts:
        target = src / part
        if not target.exists():
            raise FileNotFoundError(f"code_sha: {target} does not exist")
        for f in sorted(target.rglob("*.py")) if target.is_dir() else [target]:
            h.update(str(f.relative_to(src)).encode())
            h.update(b"\0")
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def git_sha(cwd: str | os.PathLike | None = None) -> str | None:
    """HEAD commit of the repository holding ``cwd`` (None outside a git checkout); '+dirty' if modified."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def device_info() -> dict[str, Any]:
    """CPU/GPU description; torch is consulted only if it is already imported (keeps this cheap)."""
    info: dict[str, Any] = {
        "host": socket.gethostname(), "platform": platform.platform(), "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(), "machine": platform.machine(),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["cuda"] = torch.version.cuda
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        else:
            info["gpus"] = []
    return info


def build_manifest(stage: str, config: Mapping[str, Any] | None = None, seed: int | None = None,
                   inputs: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None) -> dict:
    """Assemble a manifest dict for one output of ``stage``."""
    return {
        "stage": stage,
        "created_unix": time.time(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seed": seed,
        "config": dict(config or {}),
        "inputs": dict(inputs or {}),
        "versions": package_versions(),
        "git_sha": git_sha(),
        "device": device_info(),
        **dict(extra or {}),
    }


def write_manifest(path: str | os.PathLike, stage: str, config: Mapping[str, Any] | None = None,
                   seed: int | None = None, inputs: Mapping[str, Any] | None = None,
                   extra: Mapping[str, Any] | None = None) -> Path:
    """Build and atomically write a manifest JSON to ``path``."""
    return atomic_write_json(path, build_manifest(stage, config, seed, inputs, extra))
