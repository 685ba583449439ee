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
    # wall = max(serial path, device-hours / 2 devices); the path also holds the local bookkeeping jobs
    assert 0 < t["serial_path_hours"] <= t["wall_hours"]
    assert t["wall_hours"] == pytest.approx(max(t["serial_path_hours"], t["device_hours"] / 2))
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


def test_cpu_figures_are_read_from_the_calibration_json(tmp_path):
    """No hand copy: the CPU row follows benchmarks/results/forecast_cpu.json, its run-level fit over
    its micro-benchmark, and a missing file is an error naming it."""
    import json
    import shutil

    from autoqra.forecast.devices import cpu_device

    shutil.copy(ROOT / "benchmarks" / "results" / "forecast_cpu.json", tmp_path / "forecast_cpu.json")
    cal = json.loads((tmp_path / "forecast_cpu.json").read_text())
    cal.pop("fit", None)
    (tmp_path / "forecast_cpu.json").write_text(json.dumps(cal))
    bench = cpu_device(tmp_path)
    lora = cal["models"]["smollm2-135m"]["plans"]["lora16"]
    assert bench.start_s == pytest.approx(cal["models"]["micro"]["start_cpu_s"])  # no fit: the micro model's
    assert bench.quant_factor["nf4"] > 1.0 and bench.quant_factor["hqq"] > bench.quant_factor["nf4"]
    lora["train_tokens_per_s"] *= 2  # twice the measured speed: twice the FLOP rate
    cal["fit"] = {"runs": ["r"], "constants": {"start_s": 20.0, "train_flops": 5e10}}
    (tmp_path / "forecast_cpu.json").write_text(json.dumps(cal))
    fitted = cpu_device(tmp_path)
    assert fitted.start_s == 20.0 and fitted.train_flops == 5e10  # the fit wins where it has a figure
    assert fitted.score_flops == bench.score_flops and "fitted" in " ".join(fitted.sources.values())
    cal.pop("fit")
    (tmp_path / "forecast_cpu.json").write_text(json.dumps(cal))
    assert cpu_device(tmp_path).train_flops == pytest.approx(2 * bench.train_flops)
    with pytest.raises(ConfigError, match="forecast_cpu.json"):
        cpu_device(tmp_path / "missing")


def test_a_study_config_is_forecast_run_by_run(tmp_path):
    """autoqra forecast of a study config: one forecast per run; later runs read Stage 0 back from the
    shared cache, the ablation run the full method's search and runs; the total sums the runs."""
    cfg = _micro()
    cfg = validate_config({**cfg, "study": {"budgets": {"b4": {"type": "uniform", "bits": 4, "rank": 8},
                                                        "b3": {"type": "uniform", "bits": 3, "rank": 8}},
                                            "shared_methods": ["lora16", "base", "qlora_nf4", "hqq4"],
                                            "ablation_budgets": ["b3"], "ablation_run": "separate"}},
                          base_dir=ROOT)
    fc = forecast(cfg, device="cpu", devices=2, workdir=tmp_path, config_name="s")
    assert list(fc["runs"]) == ["b4", "b3", "b3-ablations"]
    b4, b3, abl = (fc["runs"][k]["stages"] for k in ("b4", "b3", "b3-ablations"))
    assert "Stage 0" in b4 and "Stage 0" not in b3 and "Stage 0" not in abl
    assert b3["Fine-tuning"]["jobs"] < b4["Fine-tuning"]["jobs"]  # shared methods run in b4 only
    # the ablation run: the ablations (no_stage2, single_fidelity, no_importance), not AutoQRA's runs
    assert abl["Fine-tuning"]["jobs"] == 3 and "Baselines: random search" not in abl
    assert fc["total"]["device_hours"] == pytest.approx(sum(r["total"]["device_hours"] for r in fc["runs"].values()))
    text = format_table(fc)
    assert "[b3-ablations]" in text and "study s: 3 runs" in text


def test_the_run_fit_reproduces_the_runs_it_was_fitted_to(tmp_path):
    """benchmarks/forecast_calibrate.py --fit-runs fits the forecast's own formula: on a run whose jobs
    took exactly what known constants say, the forecast with the fitted constants gives back every
    stage's wall seconds; copied jobs (shared_from) are left out of the measured stage."""
    import json
    import shutil
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from forecast_calibrate import fit_runs, stage_features
    from forecast_check import measured

    from autoqra.forecast.devices import cpu_device

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(_micro()))
    cal_dir = tmp_path / "cal"
    cal_dir.mkdir()
    shutil.copy(ROOT / "benchmarks" / "results" / "forecast_cpu.json", cal_dir / "forecast_cpu.json")
    dev = cpu_device(cal_dir)
    truth = {"start_s": 6.0, "load_s_per_gb": 3.0, "quantize_s_per_gweight": 50.0, "step_overhead_s": 0.02, "train_flops": 4e10,
             "score_flops": 6e10}
    files = {"Stage 0": "sensitivity/m.tsv", "Stage 1 g0 LF": "search_evaluate/m/v/g0-lf-0.tsv",
             "Stage 1 g0 HF": "search_evaluate/m/v/g0-hf-0.tsv", "Stage 2": "refine_evaluate/m/v/t0-0.tsv",
             "Picks": "final_evaluate/m/v/p-0.tsv", "Fine-tuning": "finetune/m/x/s0.tsv", "lm-eval": "lm_eval/m/x/s0.tsv"}
    feats = stage_features(run, dev)
    walls = {}
    for stage, rel in files.items():
        st = feats[stage]
        secs = sum(v / truth[k] if k.endswith("_flops") else v * truth.get(k, getattr(dev, k))
                   for k, v in st["features"].items()) / st["jobs"]
        walls[stage] = secs
        f = run / "results" / "benchmarks" / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(f"s\tcpu_time\n{secs}\t{secs}\n")
    copy = run / "results" / "benchmarks" / "finetune" / "m" / "y" / "s0.tsv"  # a copy: 2 s, not a fine-tune
    copy.parent.mkdir(parents=True)
    copy.write_text("s\tcpu_time\n2.0\t1.0\n")
    out = run / "results" / "finetune" / "m" / "y" / "s0" / "train.json"
    out.parent.mkdir(parents=True)
    out.write_text(json.dumps({"shared_from": {"method": "x"}}))
    meas = measured(run)
    assert meas["Fine-tuning"]["jobs"] == 1 and meas["Fine-tuning"]["copied"] == 1
    assert meas["Fine-tuning"]["wall_s"] == pytest.approx(walls["Fine-tuning"])
    fit = fit_runs([run], set(), dev, min_wall=0.0)
    assert fit["rms_rel_error"] < 1e-6
    cal = json.loads((cal_dir / "forecast_cpu.json").read_text())
    cal["fit"] = fit
    (cal_dir / "forecast_cpu.json").write_text(json.dumps(cal))
    refit = stage_features(run, cpu_device(cal_dir))
    fitted = cpu_device(cal_dir)
    for stage, wall in walls.items():
        st = refit[stage]
        secs = sum(v / getattr(fitted, k) if k.endswith("_flops") else v * getattr(fitted, k)
                   for k, v in st["features"].items()) / st["jobs"]
        assert secs == pytest.approx(wall, rel=1e-6), stage
