"""The paper DAG as the SLURM executor would submit it: a dry run with the SLURM workflow profile
and no --cores (so nothing local caps the jobs), checked job by job."""

import pytest
from workflow_runner import ROOT, dry_run_jobs, snakemake

pytestmark = pytest.mark.integration

GPU_RULES = {"sensitivity", "search_evaluate", "refine_evaluate", "random_evaluate", "optuna_search",
             "methods_hf", "finetune", "lm_eval"}


@pytest.fixture(scope="module")
def paper_jobs(tmp_path_factory):
    work = tmp_path_factory.mktemp("paper-slurm")
    res = snakemake(work, "-n", "--configfile", str(ROOT / "config" / "paper.yaml"),
                    "--workflow-profile", str(ROOT / "profiles" / "slurm"), offline=False, cores=None)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert "profiles/default" not in out  # the local profile does not leak into a SLURM run
    return dry_run_jobs(res.stdout)


def test_gpu_rules_ask_for_one_gpu_and_as_many_cpus_as_threads(paper_jobs):
    gpu = [j for j in paper_jobs if j["rule"] in GPU_RULES]
    assert {j["rule"] for j in gpu} == GPU_RULES
    for j in gpu:
        res = j["resources"]
        assert j["threads"] == 8 == int(res["cpus_per_task"]), j  # job_threads: 8 in paper.yaml
        assert res["gpu"] == "1" and res["slurm_partition"] == "gpu" and int(res["mem_mb"]) == 64000, j
    cpu = [j for j in paper_jobs if j["rule"] not in GPU_RULES]
    assert cpu and all("gpu" not in j["resources"] for j in cpu)
    assert all(int(j["resources"]["cpus_per_task"]) == j["threads"] for j in paper_jobs)
