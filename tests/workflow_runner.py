"""The real Snakefile run in scratch directories (the DAG CI and users run): helpers for the
integration and reliability tests."""

import copy
import os
import re
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


def snakemake_cmd(workdir: Path, *args: str, cores: str | None = "2") -> list[str]:
    return [*SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(workdir),
            *(("--cores", cores) if cores else ()), *args]


def snakemake(workdir: Path, *args: str, timeout: int = 900, offline: bool = True,
              env: dict[str, str] | None = None, cores: str | None = "2") -> subprocess.CompletedProcess:
    """Run the workflow in ``workdir``; ``offline=False`` leaves the hub switch to the workflow
    (configs that name hub models resolve them from the local cache only at validation time);
    ``env`` adds environment variables; ``cores=None`` leaves --cores to the profile."""
    base = {k: v for k, v in os.environ.items() if k not in OFFLINE}
    if offline:
        base.update(OFFLINE)
    env = {**base, **(env or {})}
    return subprocess.run(snakemake_cmd(workdir, *args, cores=cores), capture_output=True, text=True,
                          timeout=timeout, env=env)


def dry_run_jobs(text: str) -> list[dict]:
    """The jobs of a ``snakemake -n`` listing: rule, local (a localrule), threads, resources, wildcards,
    output files and the reason it runs."""
    jobs: list[dict] = []
    for line in text.splitlines():
        head = re.match(r"^(local)?rule (\w+):$", line)
        if head:
            jobs.append({"rule": head.group(2), "local": bool(head.group(1)), "threads": 1,
                         "resources": {}, "wildcards": {}, "output": [], "reason": ""})
        elif jobs and line.startswith("    ") and ": " in line:
            key, value = line.strip().split(": ", 1)
            if key == "threads":
                jobs[-1]["threads"] = int(value)
            elif key in ("resources", "wildcards"):
                jobs[-1][key] = dict(item.split("=", 1) for item in value.split(", ") if "=" in item)
            elif key == "output":
                jobs[-1]["output"] = value.split(", ")
            elif key == "reason":
                jobs[-1]["reason"] = value
    return jobs


LOCAL_RULES_SCRIPT = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings
snakefile, configfile, workdir = map(Path, sys.argv[1:4])
with SnakemakeApi(OutputSettings()) as api:
    wapi = api.workflow(resource_settings=ResourceSettings(), snakefile=snakefile, workdir=workdir,
                        config_settings=ConfigSettings(configfiles=[configfile]))
    wapi.list_rules()
    wf = wapi._workflow
    print(json.dumps({r.name: r.name in wf._localrules or r.norun for r in wf.rules}))
"""


def rule_locality(workdir: Path, configfile: Path, env: dict[str, str] | None = None) -> dict[str, bool]:
    """Rule name -> whether a cluster executor runs it on the submit host (``localrule``).
    (A dry run does not say: Snakemake hides it there.)"""
    import json

    res = subprocess.run([sys.executable, "-c", LOCAL_RULES_SCRIPT, str(ROOT / "Snakefile"), str(configfile),
                          str(workdir)], capture_output=True, text=True, timeout=600,
                         env={**os.environ, **(env or {})})
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])
