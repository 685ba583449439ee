"""Injected evaluation failures (config evaluation.inject_failure, the evaluator's own failure
paths) in a real Stage-1 search: failed candidates are recorded with their reason and the search
goes on; a generation in which every candidate fails stops with a message that says why."""

import csv
import json

import pytest
import yaml
from workflow_runner import MICRO, snakemake

from autoqra.evaluate import injected_failure

pytestmark = pytest.mark.reliability

FRONT = "results/search/micro/autoqra/front.json"


def search_config(tmp_path, inject):
    cfg = yaml.safe_load(MICRO.read_text())
    cfg["search"].update(generations=1, variants={"autoqra": {}})
    cfg["methods"] = {"autoqra": cfg["methods"]["autoqra"]}
    cfg["evaluation"]["inject_failure"] = inject
    out = tmp_path / "config.yaml"
    out.write_text(yaml.safe_dump(cfg))
    return out


def test_failed_candidates_are_recorded_and_the_search_goes_on(tmp_path):
    inject = {"kind": "nan", "fraction": 0.5}
    res = snakemake(tmp_path, FRONT, "--configfile", str(search_config(tmp_path, inject)))
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    with open(tmp_path / "results/search/micro/autoqra/records.tsv") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    failed = [r for r in rows if r["status"] == "failed"]
    ok = [r for r in rows if r["status"] == "ok"]
    assert failed and ok, "expected both failed and successful evaluations"
    # exactly the plans the injection picks failed, each with the NaN reason and no score
    for r in rows:
        assert (r["status"] == "failed") == (injected_failure(r["plan_hash"], inject) == "nan"), r
    assert all(r["reason"] == "nan_loss at step 1" and r["score"] in ("", "None", "nan") for r in failed)
    # both generations ran and nothing failed entered the front
    assert {r["generation"] for r in rows} == {"0", "1"}
    front = json.loads((tmp_path / FRONT).read_text())
    failed_hashes = {r["plan_hash"] for r in failed}
    assert front["front"] and not failed_hashes & {m["plan_hash"] for m in front["front"]}


def test_a_generation_where_every_candidate_fails_stops_clearly(tmp_path):
    res = snakemake(tmp_path, FRONT, "--configfile", str(search_config(tmp_path, {"kind": "oom", "fraction": 1.0})))
    out = res.stdout + res.stderr
    logs = tmp_path / "results/logs"
    out += "".join(p.read_text(errors="replace") for p in logs.rglob("*.log")) if logs.exists() else ""
    assert res.returncode != 0
    assert "generation 0: every LF evaluation failed (4 candidates; reasons: cuda_oom x4" in out, out[-3000:]
    # an OOM depends on the machine: it is recorded in the shard, never cached as the plan's result
    assert not list((tmp_path / "results/cache/evals").rglob("*.json"))
    shard = next((tmp_path / "results/search/micro/autoqra").rglob("lf-shard0.jsonl"))
    recs = [json.loads(line) for line in shard.read_text().splitlines()]
    assert len(recs) == 4 and all(r["status"] == "failed" and r["reason"].startswith("cuda_oom") for r in recs)
