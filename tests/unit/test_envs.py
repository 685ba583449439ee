"""The conda environment for cluster users pins exactly what pyproject.toml pins."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ]", req, maxsplit=1)[0].lower().replace("_", "-")


def test_conda_env_matches_pyproject_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in ("quant", "eval", "search", "slurm"):
        wanted += project["optional-dependencies"][extra]
    env = yaml.safe_load((ROOT / "envs" / "autoqra.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    pinned = {_name(r): r.replace(" ", "") for r in pip if not r.startswith("-e")}
    for req in wanted:
        assert _name(req) in pinned, f"envs/autoqra.yaml lacks {req}"
        assert pinned[_name(req)] == req.replace(" ", ""), f"{pinned[_name(req)]} != pyproject's {req}"
    assert "-e ../" in pip
