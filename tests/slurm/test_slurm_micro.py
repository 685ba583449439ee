"""The micro pipeline through a real Slurm (single node on localhost, fake GPUs): the SLURM workflow
profile as users run it, end to end, with the same results as a local run (timing fields aside)."""

import re
import subprocess
import time

import pytest
from test_resume_and_determinism import differences
from workflow_runner import MICRO, OFFLINE, ROOT, snakemake_cmd

pytestmark = pytest.mark.integration

LIMIT_S = 2400  # SIGKILL after this: on SIGTERM Snakemake would wait for its Slurm jobs
GPU_RULES = {"sensitivity", "search_reference", "search_evaluate", "refine_evaluate", "final_evaluate",
             "random_evaluate", "random_reevaluate", "optuna_search", "methods_hf", "finetune", "lm_eval"}


def test_micro_pipeline_through_slurm_equals_a_local_run(slurm, micro_run, tmp_path):
    work = tmp_path / "work"
    cmd = ["timeout", "-s", "KILL", str(LIMIT_S),
           *snakemake_cmd(work, "--configfile", str(MICRO), "--workflow-profile", str(ROOT / "profiles" / "slurm"),
                          # no slurmdbd here: poll squeue (sacct needs accounting storage)
                          "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "5",
                          "--slurm-logdir", str(tmp_path / "slurm-logs"), cores=None)]
    t0 = time.time()
    # the fake node's GPUs are gres type a100: the forecast's GPU tier choice (gpu_model) has that one tier
    res = subprocess.run(cmd, capture_output=True, text=True, env={**slurm.env, **OFFLINE, "AUTOQRA_GPU_TIERS": "a100"})
    elapsed = time.time() - t0
    log = res.stdout + res.stderr
    (tmp_path / "snakemake.log").write_text(log)
    assert res.returncode == 0, log[-4000:]
    local = set(re.findall(r"^localrule (\w+):$", log, flags=re.M)) - {"all"}
    remote = set(re.findall(r"^rule (\w+):$", log, flags=re.M))
    assert remote == GPU_RULES | {"model_prepare"}, remote
    assert {"search_propose", "search_select", "refine_update", "method_plan", "summarize", "paper_tables",
            "prefetch_model"} <= local
    single = len(re.findall(r"has been submitted with SLURM jobid", log))
    arrays = re.findall(r"Submitted array job with Snakemake IDs ([\d,]+)", log)
    in_arrays = sum(len(a.split(",")) for a in arrays)
    ctld = (slurm.root / "log" / "slurmctld.log").read_text()
    print(f"micro through Slurm: {elapsed:.0f} s, {single} single + {len(arrays)} array submissions "
          f"({in_arrays} jobs in arrays), slurmctld saw {ctld.count('_slurm_rpc_submit_batch_job')} sbatch calls")
    assert single + in_arrays == len(re.findall(r"^rule \w+:$", log, flags=re.M))
    assert differences(micro_run, work) == []
