"""Config validation: every kind of bad config is rejected with a message naming the key."""

from pathlib import Path

import pytest
from workflow_runner import mutated

from autoqra.config import load_config, load_yaml, validate_config
from autoqra.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
MICRO = load_yaml(ROOT / "config" / "micro.yaml")


def mutate(path: str, value, base=MICRO):
    return mutated(base, path, value)


def test_shipped_configs_are_valid_and_defaults_filled(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # paper.yaml names hub models, fetched later
    for name in ("micro.yaml", "config.yaml", "paper.yaml"):
        cfg = load_config(ROOT / "config" / name, base_dir=ROOT)
        assert cfg["search_space"]["lora_alpha_per_rank"] == 2.0
        assert cfg["budget"]["type"] == "uniform"
    minimal = {"models": {"m": {"source": "micro"}}, "data": {"name": "d", "source": "synthetic"}}
    cfg = validate_config(minimal)
    assert cfg["seed"] == 0 and cfg["search_space"]["bits"] == [2, 3, 4, 8]
    # the quantizer map is stored complete, with int keys
    assert cfg["search_space"]["quantizers"] == {2: "hqq", 3: "hqq", 4: "nf4", 8: "int8", 16: "none"}
    assert cfg["search_space"]["hqq_axis"] == 0 and cfg["search_space"]["meta_bits"] == 16
    assert cfg["models"]["m"]["id"] is None and cfg["data"]["max_seq_len"] == 256
    assert minimal == {"models": {"m": {"source": "micro"}}, "data": {"name": "d", "source": "synthetic"}}


@pytest.mark.parametrize("path,value,expect", [
    ("sead", 1, r"'<top level>': unknown key\(s\) \['sead'\]"),
    ("data.n_trian", 5, r"'data': unknown key\(s\) \['n_trian'\]"),
    ("seed", "zero", r"'seed': 'zero' is not of type 'integer'"),
    ("data.n_val", 0, r"'data.n_val': 0 is less than the minimum of 1"),
    ("search_space", {"bits": [2, 5]}, r"'search_space.bits.1': 5 is not allowed; expected one of \[2, 3, 4, 8, 16\]"),
    ("search_space", {"bits": []}, r"'search_space.bits'"),
    ("search_space", {"ranks": [8, 0]}, r"'search_space.ranks.1': 0 is less than the minimum of 1"),
    ("search_space", {"ranks": [4.5]}, r"'search_space.ranks.0': 4.5 is not of type 'integer'"),
    ("search_space", {"backend": "hqq"}, r"'search_space': unknown key\(s\) \['backend'\]; 'backend' was replaced "
                                         r"by a quantizer per bit-width: search_space.quantizers"),
    ("search_space", {"quantizers": {4: "gptq"}}, r"'search_space.quantizers.4': 'gptq' is not allowed"),
    ("search_space", {"quantizers": {3: "nf4"}}, r"'search_space.quantizers.3': quantizer 'nf4' cannot store 3-bit "
                                                 r"weights \(it stores 4 bits\)"),
    ("search_space", {"quantizers": {2: "int8"}}, r"'search_space.quantizers.2': quantizer 'int8' cannot store 2-bit"),
    ("search_space", {"quantizers": {16: "hqq"}}, r"'search_space.quantizers.16': quantizer 'hqq' cannot store 16-bit"),
    ("search_space", {"quantizers": {5: "hqq"}}, r"'search_space.quantizers': bit-width 5 not allowed"),
    ("search_space", {"hqq_axis": 2}, r"'search_space.hqq_axis': 2 is not allowed; expected one of \[0, 1\]"),
    ("search_space", {"meta_bits": 4}, r"'search_space.meta_bits': 4 is not allowed; expected one of \[16, 8\]"),
    ("search_space", {"group_size": 48}, r"'search_space.group_size': HQQ cannot store models.micro's projections "
                                         r"with group size 48 and axis 0: .*not a multiple of group size 48"),
    ("models", {}, r"'models'"),
    ("data", {"name": "x"}, r"'data': 'source' is a required property"),
    ("budget", {"type": "gb", "value": 0.0001}, r"'budget'.*below the smallest possible plan"),
    ("budget", {"type": "uniform", "bits": 2, "rank": 1}, r"'budget'.*below the smallest possible plan"),
    ("budget", {"type": "gb"}, r"'budget.value': required"),
    ("budget", {"type": "uniform", "bits": 3, "rank": 8, "quantizer": "nf4"},
     r"'budget.quantizer': quantizer 'nf4' cannot store 3-bit weights"),
    ("budget", {"type": "gb", "value": 1.0, "quantizer": "hqq"}, r"'budget.quantizer': only allowed with budget.type"),
    ("budget", {"type": "between", "low_bits": 2}, r"'budget.high_bits': required when budget.type is 'between'"),
    ("budget", {"type": "between", "low_bits": 4, "high_bits": 3}, r"'budget.low_bits': 4 must be below budget.high_bits"),
    ("budget", {"type": "between", "low_bits": 2, "high_bits": 4, "fraction": 1.5}, r"'budget.fraction': 1.5 is greater"),
    ("budget", {"type": "uniform", "bits": 4, "fraction": 0.5}, r"'budget.fraction': only allowed with budget.type 'between'"),
    ("budget", {"type": "between", "low_bits": 2, "high_bits": 4, "value": 9}, r"'budget.value': only allowed with"),
    ("data", {"name": "x", "source": "alpaca_file", "path": "no/such/file.json"}, r"'data.path'.*does not exist"),
    ("data", {"name": "x", "source": "alpaca_file"}, r"'data.path': required"),
    ("models", {"m": {"source": "local", "id": "/no/such/dir"}}, r"'models.m'.*/no/such/dir"),
    ("models", {"m": {"source": "hf"}}, r"'models.m.source': 'hf' is not allowed"),
    ("models", {"m": {"source": "micro", "micro": {"hidden_size": 60, "num_attention_heads": 7}}},
     r"'models.m'.*divisible"),
    ("training", {"warmup_steps": 2, "warmup_ratio": 0.1}, r"'training': give warmup_steps or warmup_ratio, not both"),
    ("finetune", {"lr_schedule": "step"}, r"'finetune.lr_schedule': 'step' is not allowed"),
    ("methods", {"x": {"plan": "search", "variant": "nope"}}, r"'methods.x.variant': 'nope' is not a search variant"),
    ("methods", {"x": {"plan": "uniform", "bits": 4}}, r"'methods.x': plan 'uniform' needs \['bits', 'rank'\]"),
    ("methods", {"x": {"plan": "uniform", "quantizer": "nf4", "bits": 3, "rank": 8}},
     r"'methods.x.quantizer': quantizer 'nf4' cannot store 3-bit weights \(it stores 4 bits\); methods.x.bits is 3"),
    ("methods", {"x": {"plan": "uniform", "quantizer": "hqq", "bits": 16, "rank": 8}},
     r"'methods.x.quantizer': quantizer 'hqq' cannot store 16-bit"),
    ("methods", {"x": {"plan": "uniform", "backend": "bnb", "bits": 4, "rank": 8}},
     r"'methods.x': unknown key\(s\) \['backend'\]; 'backend' was replaced"),
    ("methods", {"x": {"plan": "sequential", "rank": 32}}, r"'methods.x.rank': 32 is not on the rank ladder"),
    ("methods", {"x": {"plan": "magic"}}, r"'methods.x.plan': 'magic' is not allowed"),
    ("methods", {}, r"'methods'"),
    ("finetune", {"steps": 3, "epochs": 1}, r"'finetune': give either 'steps'"),
    ("finetune", {"seeds": []}, r"'finetune.seeds'"),
    ("lm_eval", {"tasks": ["arc_easy"]}, r"'lm_eval.tasks': \['arc_easy'\] are not offline tasks"),
    ("job_threads", 0, r"'job_threads': 0 is less than the minimum of 1"),
    ("search", {"population": 4, "promote": 5}, r"'search' \(variant 'autoqra'\).*promote=5 \(expected between 1"),
    ("refine", {"min_radius": 3, "init_radius": 2}, r"'refine'.*min_radius <= init_radius"),
    ("evaluation", {"inject_failure": {"kind": "nan", "fraction": 2}}, r"'evaluation.inject_failure'"),
])
def test_bad_configs_name_the_key(path, value, expect):
    with pytest.raises(ConfigError, match=expect):
        validate_config(mutate(path, value), base_dir=ROOT)


def test_uncached_hub_model_is_an_error_only_offline(monkeypatch):
    cfg = mutate("models", {"m": {"source": "hub", "id": "autoqra-test/no-such-model"}})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match=r"'models.m'.*'autoqra-test/no-such-model' is not in the local "
                                          r"Hugging Face cache and HF_HUB_OFFLINE is set"):
        validate_config(cfg, base_dir=ROOT)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    validate_config(cfg, base_dir=ROOT)  # online: model_prepare downloads it


def test_several_errors_reported_at_once():
    cfg = mutate("seed", -1, mutate("data.n_test", "many"))
    with pytest.raises(ConfigError) as e:
        validate_config(cfg)
    assert "'seed'" in str(e.value) and "'data.n_test'" in str(e.value)


def test_local_paths_resolve_against_base_dir(tmp_path):
    (tmp_path / "data.json").write_text('[{"instruction": "a", "input": "", "output": "b"}]')
    cfg = mutate("data", {"name": "x", "source": "alpaca_file", "path": "data.json"})
    validate_config(cfg, base_dir=tmp_path)
    with pytest.raises(ConfigError, match="data.path"):
        validate_config(cfg, base_dir=ROOT)


def test_yaml_errors_name_the_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("models: [unclosed\n")
    with pytest.raises(ConfigError, match="c.yaml: invalid YAML"):
        load_config(f)
    f.write_text("- a list\n")
    with pytest.raises(ConfigError, match="c.yaml: expected a mapping"):
        load_config(f)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "none.yaml")


@pytest.mark.parametrize("lf,hf,ok", [
    ({"steps": 10}, {"steps": 2}, False),  # issue #27: accepted before
    ({"steps": 5}, {"steps": 5}, False),
    ({"steps": 2}, {"steps": 5}, True),
    ({"data_fraction": 0.2, "epochs": 0.5}, {"data_fraction": 0.05, "epochs": 0.1}, False),
    ({"data_fraction": 0.05, "epochs": 0.1}, {"data_fraction": 0.2, "epochs": 0.5}, True),
    ({"data_fraction": 0.5, "epochs": 1}, {"data_fraction": 0.25, "epochs": 4}, True),  # fewer data, more epochs
    # mixed: examples seen, 4 per step, micro's n_train = 400
    ({"steps": 60}, {"data_fraction": 0.5, "epochs": 1}, False),
    ({"steps": 10}, {"data_fraction": 0.5, "epochs": 1}, True),
    ({"data_fraction": 0.5, "epochs": 1}, {"steps": 10}, False),
])
def test_high_fidelity_must_train_more_than_low(lf, hf, ok):
    cfg = mutate("fidelities", {"lf": lf, "hf": hf})
    assert MICRO["data"]["n_train"] == 400 and MICRO["training"]["batch_size"] == 4
    if ok:
        validate_config(cfg, base_dir=ROOT)
        return
    with pytest.raises(ConfigError, match=r"'fidelities.hf': the high fidelity must train more than fidelities.lf"):
        validate_config(cfg, base_dir=ROOT)
