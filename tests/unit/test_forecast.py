"""autoqra forecast: work counted from the config, sizes that grow with the model and the training,
clear errors for an unknown device, an unknown model or a peak no device holds."""

import copy
import time
from pathlib import Path

import pytest
import yaml

from autoqra.config import validate_config
from autoqra.errors import ConfigError
from autoqra.forecast import forecast, format_table, load_forecast_config
from autoqra.forecast.resources import JobSizer

ROOT = Path(__file__).resolve().parents[2]


def _micro(**edits):
    cfg = yaml.safe_load((ROOT / "config" / "micro.yaml").read_text())
    for path, value in edits.items():
        d = cfg
        *head, last = path.split(".")
        for k in head:
            d = d[k]
        d[last] = value
    return validate_config(cfg, base_dir=ROOT)


def test_micro_forecast_counts_the_dag_per_stage(tmp_path):
    fc = forecast(_micro(), device="cpu", devices=2, workdir=tmp_path)
    stages = fc["stages"]
    assert {"Stage 0", "Stage 1 g0 LF", "Stage 1 g0 HF", "Stage 2", "Picks", "Fine-tuning", "lm-eval"} <= set(stages)
    # micro: 3 variants, population 4, shards 1: one job per variant and phase (single_fidelity has no LF)
    assert stages["Stage 1 g0 LF"]["jobs"] == 2 and stages["Stage 1 g0 HF"]["jobs"] == 3
    assert stages["Fine-tuning"]["jobs"] == 10  # 10 methods x 1 seed
    t = fc["total"]
    assert t["device_hours"] == pytest.approx(sum(s["device_hours"] for s in stages.values()))
    assert 0 < t["serial_path_hours"] <= t["wall_hours"] <= t["device_hours"]
    assert "total" in format_table(fc) and fc["device"]["sources"]


def test_larger_model_or_more_finetuning_raises_runtime_and_memory():
    small, big = _micro(), _micro(**{"models.micro.micro.hidden_size": 512, "models.micro.micro.intermediate_size": 1536,
                                     "models.micro.micro.num_hidden_layers": 8})
    wc = {"model": "micro", "variant": "autoqra", "g": "1", "phase": "hf", "shard": "0", "method": "lora16", "seed": "0"}
    for rule in ("search_evaluate", "finetune", "lm_eval"):
        a, b = JobSizer(small, workdir="/nonexistent"), JobSizer(big, workdir="/nonexistent")
        assert b.estimate(rule, wc)["seconds"] > a.estimate(rule, wc)["seconds"], rule
        assert b.gpu_mem_mb(rule, wc, 1) > a.gpu_mem_mb(rule, wc, 1), rule
        assert b.mem_mb(rule, wc, 1) >= a.mem_mb(rule, wc, 1), rule
    longer = JobSizer(_micro(**{"finetune.steps": 600000}), workdir="/nonexistent")
    base = JobSizer(small, workdir="/nonexistent")
    assert longer.runtime("finetune", wc, 1) > base.runtime("finetune", wc, 1)
    # retries escalate: more time and memory each attempt
    assert longer.runtime("finetune", wc, 2) > longer.runtime("finetune", wc, 1)
    assert base.mem_mb("finetune", wc, 2) > base.mem_mb("finetune", wc, 1)
    assert base.gpu_mem_mb("finetune", wc, 3) > base.gpu_mem_mb("finetune", wc, 1)


def test_unknown_device_is_a_clear_error():
    with pytest.raises(ConfigError, match="argument --device: device 'tpu9' unknown"):
        forecast(_micro(), device="tpu9")


def test_peak_beyond_every_device_names_the_model(tmp_path):
    cfg = _micro(**{"training.batch_size": 256, "data.max_seq_len": 4096,
                    "models.micro.micro.max_position_embeddings": 4096,
                    "models.micro.micro.vocab_size": 65536})
    with pytest.raises(ConfigError, match=r"config key 'models.micro': a .* job needs .* GB.*largest: h200"):
        forecast(cfg, device="h100", workdir=tmp_path)


def test_unknown_hub_model_without_config_is_a_clear_error(monkeypatch, tmp_path):
    cfg = copy.deepcopy(_micro())
    cfg["models"] = {"mystery": {"source": "hub", "id": "nobody/unknown-model-x", "revision": None}}
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ConfigError, match=r"config key 'models.mystery.id': the shape of 'nobody/unknown-model-x'"):
        forecast(cfg, device="h100", workdir=tmp_path)


@pytest.mark.parametrize("name", ["paper.yaml", "study-gpu.yaml"])
def test_gpu_configs_forecast_offline_fast(monkeypatch, tmp_path, name):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # nothing cached: the table of shapes answers
    t0 = time.process_time()
    cfg = load_forecast_config(ROOT / "config" / name, base_dir=ROOT)
    fc = forecast(cfg, device="h100", workdir=tmp_path)
    assert time.process_time() - t0 < 30
    assert all(m["shape_source"].startswith("autoqra.forecast.shapes table") for m in fc["models"].values())
    assert fc["total"]["fits_device"] and fc["total"]["device_hours"] > 1
    if name == "study-gpu.yaml":
        assert fc["total"]["device_hours"] <= 24  # the one-GPU study fits a day of one 80 GB GPU


def test_a_gpu_check_json_replaces_the_assumed_throughput(tmp_path):
    """The GPU check's own format (benchmarks/gpu_check.py): its 16-bit LoRA tokens/s on the named GPU
    set that device's training FLOP/s; another GPU keeps the stated assumption."""
    import json

    from autoqra.forecast.devices import get_device

    check = {"compute_params": 1.0e9, "sections": {"env": {"gpu": "NVIDIA H200"},
                                                    "train": [{"method": "nf4", "tokens_per_s": 900.0},
                                                              {"method": "lora16", "tokens_per_s": 2000.0}]}}
    (tmp_path / "gpu_check.json").write_text(json.dumps(check))
    h200 = get_device("h200", results_dir=tmp_path)
    assert h200.train_flops == pytest.approx(6 * 1.0e9 * 2000.0)
    assert "measured" in h200.sources["throughput"]
    assert get_device("h100", results_dir=tmp_path).train_flops == get_device("h100").train_flops
