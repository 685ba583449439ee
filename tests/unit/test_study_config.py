"""`autoqra study`'s per-budget configs, without running anything: shared methods only in the first
budget, ablations (and the search variants only they use) only in study.ablation_budgets."""

import json

import pytest
import yaml

from autoqra.config import REPO_ROOT, validate_config
from autoqra.errors import ConfigError
from autoqra.study import budget_configs, study_settings

STUDY = REPO_ROOT / "config" / "study.yaml"


def study_cfg(**study):
    cfg = yaml.safe_load(STUDY.read_text())
    cfg["study"] = {**cfg["study"], **study}
    return validate_config(cfg, base_dir=REPO_ROOT)


def test_ablations_run_only_in_their_budgets(tmp_path):
    cfgs = budget_configs(study_cfg(ablation_budgets=["b3"], ablation_run="same"), tmp_path)
    b3, b4 = cfgs["b3"], cfgs["b4"]
    ablations = {m for m, s in b3["methods"].items() if s.get("group") == "ablation"}
    assert {"no_stage2", "no_warm_start", "no_coupling", "no_perf_model", "single_fidelity"} == ablations
    assert not {m for m, s in b4["methods"].items() if s.get("group") == "ablation"}
    assert set(b4["search"]["variants"]) == {"autoqra"}  # what AutoQRA itself and the random search's cost need
    assert set(b3["search"]["variants"]) == set(yaml.safe_load(STUDY.read_text())["search"]["variants"])
    # the shared baselines run in the first budget only; every budget keeps AutoQRA and its rivals
    assert "lora16" in b4["methods"] and "lora16" not in b3["methods"]
    assert {"autoqra", "random", "sequential", "oracle"} <= set(b3["methods"]) & set(b4["methods"])
    for c in (b3, b4):  # each per-budget config is itself a valid pipeline config
        validate_config(c, base_dir=REPO_ROOT)


def test_ablations_in_a_run_of_their_own(tmp_path):
    """study.ablation_run: separate splits b3 into b3 (no ablations) and b3-ablations (AutoQRA, its
    reference read back from the shared cache, and the ablations; no optuna), right after it."""
    cfgs = budget_configs(study_cfg(ablation_budgets=["b3"], ablation_run="separate"), tmp_path)
    assert list(cfgs) == ["b4", "b35", "b3", "b3-ablations"]
    b3, abl = cfgs["b3"], cfgs["b3-ablations"]
    assert not {m for m, s in b3["methods"].items() if s.get("group") == "ablation"}
    assert {"autoqra", "sequential", "oracle", "random"} <= set(b3["methods"])
    assert set(abl["methods"]) == {"autoqra", "no_stage2", "no_warm_start", "no_coupling", "no_perf_model",
                                   "single_fidelity"}
    assert set(abl["search"]["variants"]) == {"autoqra", "no_warm_start", "no_coupling", "no_perf_model",
                                              "single_fidelity"}
    assert abl["budget"] == b3["budget"] and abl["cache_dir"] == b3["cache_dir"]
    assert not abl["optuna_search"]["enabled"] and b3["optuna_search"]["enabled"]
    for c in (b3, abl):
        validate_config(c, base_dir=REPO_ROOT)


def test_study_compares_on_paired_seeds_and_full_method_ablations():
    """Issue #23: >= 3 budgets (b4 and two below, type between), 5 paired seeds for AutoQRA and its
    rivals QLoRA/Sequential/oracle, >= 3 for LoRA-16 and random, ablations on AutoQRA's seeds that
    each switch one thing off with Stage 2 kept, pick seeds disjoint from the fine-tuning seeds."""
    cfg = study_cfg()
    budgets = cfg["study"]["budgets"]
    assert len(budgets) >= 3 and budgets["b4"]["type"] == "uniform"
    assert sum(b["type"] == "between" and b["high_bits"] == 4 for b in budgets.values()) >= 2
    seeds = {m: s["seeds"] or cfg["finetune"]["seeds"] for m, s in cfg["methods"].items()}
    assert all(len(seeds[m]) == 5 and seeds[m] == seeds["autoqra"] for m in ("qlora_nf4", "sequential", "oracle"))
    assert all(len(seeds[m]) >= 3 and set(seeds[m]) <= set(seeds["autoqra"]) for m in ("lora16", "random"))
    for m, s in cfg["methods"].items():
        if s["group"] == "ablation":
            assert seeds[m] == seeds["autoqra"], m
            variant = cfg["search"]["variants"][s["variant"]]
            assert "stage2" not in variant and len(variant) + (not s["stage2"]) == 1, m  # one switch
    picks = set(range(cfg["refine"]["pick_seed_offset"] + 1,
                      cfg["refine"]["pick_seed_offset"] + cfg["refine"]["reevaluate_seeds"] + 2))
    assert not picks & {x for s in seeds.values() for x in s}
    assert cfg["optuna_search"]["enabled"] and cfg["optuna_search"]["sampler"] == "tpe"
    assert any(a in budgets and budgets[a]["type"] == "between" for a in cfg["study"]["ablation_budgets"])


def test_every_budget_runs_the_ablations_by_default(tmp_path):
    cfg = study_cfg()
    cfg["study"].pop("ablation_budgets", None)
    cfg["study"].pop("ablation_run", None)
    cfgs = budget_configs(cfg, tmp_path)
    assert all("no_warm_start" in c["methods"] for c in cfgs.values())


def test_unknown_ablation_budget_is_refused():
    cfg = study_cfg(ablation_budgets=["b5"])
    with pytest.raises(ConfigError, match=r"'study.ablation_budgets': \['b5'\] are not budgets"):
        study_settings(cfg)


def test_combine_only_keeps_the_measured_wall_times(tmp_path):
    from autoqra.study import kept_wall_times

    prev = tmp_path / "study.json"
    prev.write_text(json.dumps({"runs": {"b3": {"wall_seconds": 4000.0}, "b4": {"wall_seconds": 3000.0}}}))
    runs = {"b3": {"dir": "x", "wall_seconds": None}, "b4": {"dir": "y", "wall_seconds": 12.5},
            "b5": {"dir": "z", "wall_seconds": None}}
    kept = kept_wall_times(runs, prev)
    assert [kept[b]["wall_seconds"] for b in ("b3", "b4", "b5")] == [4000.0, 12.5, None]  # a new measurement wins
    assert kept_wall_times(runs, tmp_path / "missing.json")["b3"]["wall_seconds"] is None


def test_study_json_commands_name_repository_paths_relatively():
    from autoqra.study import _shown

    assert _shown(str(REPO_ROOT / "Snakefile")) == "Snakefile"
    assert _shown(str(REPO_ROOT / "results/study/b3/config.yaml")) == "results/study/b3/config.yaml"
    assert _shown("/elsewhere/work") == "/elsewhere/work" and _shown("--cores") == "--cores"


def test_a_bad_budget_is_refused_before_any_run(tmp_path):
    from autoqra.study import run_study

    cfg = yaml.safe_load(STUDY.read_text())
    cfg["study"]["budgets"]["b4"] = {"type": "between", "low_bits": 2}  # no high_bits; b3 (first) is fine
    cfg["study"]["work_dir"] = str(tmp_path / "work")
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match=r"'study.budgets.b4' .*'budget.high_bits': required when budget.type is 'between'"):
        run_study(path, root=REPO_ROOT)
    assert not (tmp_path / "work").exists()  # nothing ran, not even the first budget
