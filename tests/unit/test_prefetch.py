"""Prefetch on the submit host: hub sources are listed for download, offline/bundled ones are no-ops."""

import os

import yaml

from autoqra import prefetch
from autoqra.config import REPO_ROOT, load_config

TASK_DIR = REPO_ROOT / "workflow" / "resources" / "lm_eval_tasks"


def test_offline_sources_need_no_download_and_import_no_hf_library():
    import sys

    before = {m for m in sys.modules if m.split(".")[0] in ("huggingface_hub", "datasets", "lm_eval")}
    cfg = load_config(REPO_ROOT / "config" / "micro.yaml", base_dir=REPO_ROOT)
    assert prefetch.model_record(cfg["models"]["micro"]) == {"source": "micro", "download": False}
    assert prefetch.data_record(cfg["data"]) == {"source": "synthetic", "download": False}
    rec = prefetch.lm_eval_record(cfg["lm_eval"]["tasks"], TASK_DIR)
    assert rec == {"tasks": ["general_text", "synth_gen", "synth_mc"], "downloaded": [], "download": False}
    after = {m for m in sys.modules if m.split(".")[0] in ("huggingface_hub", "datasets", "lm_eval")}
    assert after == before  # a no-op does not even import the download libraries


def test_paper_config_prefetches_every_registry_task():
    # read, not validated: validation looks the hub models up in the cache, which CI runs offline
    cfg = yaml.safe_load((REPO_ROOT / "config" / "paper.yaml").read_text())
    tasks = cfg["lm_eval"]["tasks"]
    assert prefetch.registry_tasks(tasks, TASK_DIR) == sorted(tasks)
    assert prefetch.registry_tasks([*tasks, "synth_mc"], TASK_DIR) == sorted(tasks)
    assert {m["source"] for m in cfg["models"].values()} == {"hub"} and cfg["data"]["source"] == "hub"


def test_go_online_lifts_the_offline_switch_for_this_process_only(monkeypatch):
    for var in prefetch.OFFLINE_VARS:
        monkeypatch.setenv(var, "1")
    prefetch.go_online()
    assert not any(var in os.environ for var in prefetch.OFFLINE_VARS)
