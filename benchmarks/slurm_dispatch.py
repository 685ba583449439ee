"""How to submit many same-shaped GPU jobs to SLURM: one sbatch each, job arrays, or grouped jobs.

A toy workflow shaped like a search (``phases`` phases of ``shards`` one-GPU jobs of ``seconds``
each, joined by a local bookkeeping rule) runs against a real single-node Slurm on localhost
(tests/slurm/localslurm.py; ``gpus`` fake GPUs) through Snakemake's SLURM executor in three modes:

- ``single``: every job its own sbatch (the plugin's default);
- ``arrays``: ``--slurm-array-jobs work``: the shards of a phase in one ``sbatch --array``;
- ``groups``: ``group: g<phase>`` on the GPU rule with ``--group-components g<phase>=<shards>`` and the
  GPU a local resource of at most 1 per group job, i.e. one sbatch per phase whose shards run one
  after another on one GPU (a group spanning phases would depend on itself through the local rule).

Writes wall time and sbatch calls (from slurmctld's log) per mode as JSON.
    python benchmarks/slurm_dispatch.py --out benchmarks/results/slurm_dispatch.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "slurm"))
from localslurm import LocalSlurm, missing  # noqa: E402

SNAKEFILE = """
PHASES, SHARDS, SECONDS = {phases}, {shards}, {seconds}


rule all:
    input:
        f"w/gather{{PHASES - 1}}.txt",


def previous(wildcards):
    p = int(wildcards.p)
    return [] if p == 0 else f"w/gather{{p - 1}}.txt"


def phase_group(wildcards):
    return f"g{{wildcards.p}}"  # one group per phase: a single group across phases would depend on itself


rule work:
    input:
        previous,
    output:
        "w/p{{p}}/s{{s}}.txt",{group}
    resources:
        gpu=1,
        slurm_partition="gpu",
        gpu_model="a100",
        mem_mb=1000,
        runtime=10,
    shell:
        "sleep {{SECONDS}}; echo $CUDA_VISIBLE_DEVICES > {{output}}"


rule gather:
    localrule: True
    input:
        lambda wc: expand("w/p{{p}}/s{{s}}.txt", p=wc.p, s=range(SHARDS)),
    output:
        "w/gather{{p}}.txt",
    shell:
        "cat {{input}} > {{output}}"
"""

MODES = {
    "single": [],
    "arrays": ["--slurm-array-jobs", "work"],
    "groups": ["--group-components", *[f"g{p}={{shards}}" for p in range(16)], "--resources", "gpu=1",
               "--set-resource-scopes", "gpu=local"],
}


def run_mode(cluster: LocalSlurm, mode: str, work: Path, args: argparse.Namespace) -> dict:
    work.mkdir(parents=True)
    group = "\n    group:\n        phase_group" if mode == "groups" else ""
    (work / "Snakefile").write_text(SNAKEFILE.format(phases=args.phases, shards=args.shards, seconds=args.seconds,
                                                     group=group))
    ctld = cluster.root / "log" / "slurmctld.log"
    before = ctld.read_text().count("_slurm_rpc_submit_batch_job")
    extra = [a.format(shards=args.shards) for a in MODES[mode]]
    cmd = ["timeout", "-s", "KILL", "1800", sys.executable, "-m", "snakemake", "--executor", "slurm", "--jobs", "64",
           "--cores", "64", "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "5",
           "--latency-wait", "30", "--default-resources", "slurm_partition=cpu", "mem_mb=1000", *extra]
    t0 = time.time()
    res = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=cluster.env)
    wall = time.time() - t0
    (work / "snakemake.log").write_text(res.stdout + res.stderr)
    if res.returncode != 0:
        cluster.cancel_all()
        return {"mode": mode, "ok": False, "wall_s": round(wall, 1), "log_tail": (res.stdout + res.stderr)[-1500:]}
    calls = ctld.read_text().count("_slurm_rpc_submit_batch_job") - before
    return {"mode": mode, "ok": True, "wall_s": round(wall, 1), "sbatch_calls": calls,
            "gpu_jobs": args.phases * args.shards, "ideal_s": args.phases * -(-args.shards // args.gpus) * args.seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--phases", type=int, default=3)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--gpus", type=int, default=2)
    ap.add_argument("--modes", default="single,arrays,groups")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "slurm_dispatch.json")
    args = ap.parse_args()
    why = missing()
    if why:
        sys.exit(f"slurm_dispatch: {why}")
    with tempfile.TemporaryDirectory(prefix="slurm-dispatch-") as tmp:
        cluster = LocalSlurm(Path(tmp) / "slurm", gpus=args.gpus)
        cluster.start()
        try:
            results = [run_mode(cluster, m, Path(tmp) / m, args) for m in args.modes.split(",")]
        finally:
            cluster.stop()
    if args.out.exists():  # keep the other modes' results of an earlier call
        results += [r for r in json.loads(args.out.read_text())["results"] if r["mode"] not in args.modes.split(",")]
        results.sort(key=lambda r: list(MODES).index(r["mode"]))
    out = {"settings": vars(args) | {"out": str(args.out)}, "results": results,
           "note": "toy jobs (sleep) on a 2-core machine shared with other work: wall times include Snakemake's "
                   "status polling and are inflated by the load; sbatch calls are exact"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
