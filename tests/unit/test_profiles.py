"""The SLURM profile's resource expressions: memory and runtime grow with each retry, up to a cap."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _value(expr, attempt: int, threads: int = 8):
    return eval(str(expr), {"attempt": attempt, "threads": threads, "min": min, "max": max})  # noqa: S307


def test_slurm_profile_grows_memory_and_runtime_with_retries_up_to_a_cap():
    prof = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    assert prof["executor"] == "slurm" and prof["retries"] >= 1
    attempts = range(1, prof["retries"] + 2)
    rules = {"<default>": prof["default-resources"], **prof["set-resources"]}
    for name, res in rules.items():
        for key in ("mem_mb", "runtime"):
            expr = res.get(key, prof["default-resources"][key])
            values = [_value(expr, a) for a in attempts]
            assert values[1] > values[0] and values == sorted(values), (name, key, values)
            assert _value(expr, 100) == _value(expr, 1000), f"{name}.{key} has no cap"
    assert _value(prof["default-resources"]["cpus_per_task"], 1, threads=8) == 8  # cpus follow threads
    gpu = [n for n, r in prof["set-resources"].items() if r.get("gpu")]
    assert gpu and all("cpus_per_task" not in prof["set-resources"][n] for n in gpu)
    assert "set-threads" not in prof  # threads come from the config (job_threads)


def test_local_profile_holds_local_knobs_only():
    prof = yaml.safe_load((ROOT / "profiles" / "default" / "config.yaml").read_text())
    assert "executor" not in prof and "default-resources" not in prof and "set-resources" not in prof
