"""The real Snakefile run in scratch directories (the DAG CI and users run): helpers for the
integration and reliability tests."""

import copy
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MICRO = ROOT / "config" / "micro.yaml"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


DELETE = object()  # a value for mutated(): remove the key


def mutated(cfg: dict, path: str, value) -> dict:
    """A deep copy of ``cfg`` with the dotted key ``path`` set to ``value`` (or removed: DELETE)."""
    out = copy.deepcopy(cfg)
    *parents, last = path.split(".")
    node = out
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = copy.deepcopy(value)
    return out


def snakemake_cmd(workdir: Path, *args: str) -> list[str]:
    return [*SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--cores", "2", *args]


def snakemake(workdir: Path, *args: str, timeout: int = 900, offline: bool = True,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the workflow in ``workdir``; ``offline=False`` leaves the hub switch to the workflow
    (configs that name hub models resolve them from the local cache only at validation time);
    ``env`` adds environment variables."""
    base = {k: v for k, v in os.environ.items() if k not in OFFLINE}
    if offline:
        base.update(OFFLINE)
    env = {**base, **(env or {})}
    return subprocess.run(snakemake_cmd(workdir, *args), capture_output=True, text=True, timeout=timeout, env=env)
