"""Narrow rerun triggers on the embedded default config: the whole DAG is marked done with
`snakemake --touch` (no training), then one method's label changes; only the jobs that print
labels (summary and paper tables/figures) rerun, never a plan, a fine-tuning or an evaluation."""

import pytest
import yaml
from workflow_runner import ROOT, dry_run_jobs, snakemake

pytestmark = pytest.mark.integration

DIRECTORY_OUTPUTS = ("/hf", "/adapter")  # directory() outputs of model_prepare and finetune


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """A workflow directory whose every output exists and is recorded as made with the default config."""
    work = tmp_path_factory.mktemp("touched")
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    (work / "default.yaml").write_text(yaml.safe_dump(config))
    dry = snakemake(work, "-n", "--configfile", str(work / "default.yaml"))
    assert dry.returncode == 0, dry.stderr[-3000:]
    for job in dry_run_jobs(dry.stdout):
        for out in job["output"]:
            path = work / out
            if out.endswith(DIRECTORY_OUTPUTS):
                path.mkdir(parents=True, exist_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
    # --forceall: every job is "run" by touching, which records its params as Snakemake's metadata
    touch = snakemake(work, "--touch", "--forceall", "--configfile", str(work / "default.yaml"))
    assert touch.returncode == 0, touch.stderr[-3000:]
    again = snakemake(work, "-n", "--configfile", str(work / "default.yaml"))
    assert "Nothing to be done" in again.stdout + again.stderr
    return work, config


def test_relabelling_one_method_reruns_only_its_summary_and_paper_jobs(done):
    work, config = done
    config["methods"]["qlora_nf4"]["label"] = "QLoRA four-bit"
    (work / "relabelled.yaml").write_text(yaml.safe_dump(config))
    res = snakemake(work, "-n", "--configfile", str(work / "relabelled.yaml"))
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = [j for j in dry_run_jobs(res.stdout) if j["rule"] != "all"]
    assert {j["rule"] for j in jobs} == {"summarize", "paper_tables", "paper_fig2_pareto", "paper_table5_claims"}, \
        [(j["rule"], j["reason"]) for j in jobs]
    reasons = {j["rule"]: j["reason"] for j in jobs}
    assert "Params have changed" in reasons["summarize"] and "Params have changed" in reasons["paper_fig2_pareto"]
    assert "results/summary/aggregate.tsv" in reasons["paper_tables"]  # its input, rewritten by summarize
    # the claims table shows no labels: it reruns only because summarize rewrites its inputs
    assert "Params have changed" not in reasons["paper_table5_claims"]
    assert "results/summary/aggregate.tsv" in reasons["paper_table5_claims"]


def test_config_overrides_work_without_a_configfile(done):
    work, _ = done
    res = snakemake(work, "-n", "--config", "seed=1")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "extended by additional config" in res.stdout + res.stderr
    seeded = {j["rule"] for j in dry_run_jobs(res.stdout)}
    assert {"search_propose", "model_prepare", "finetune"} <= seeded  # the seed reaches every seeded stage
