# Helpers, config validation and wildcard constraints. No rules here.
import os
import sys
from pathlib import Path

from autoqra.config import validate_config
from autoqra.errors import ConfigError

try:
    # Schema + semantic checks (files exist, budget feasible) before any job; defaults are filled
    # in place so every rule sees the complete config.
    _validated = validate_config(config, base_dir=workflow.basedir)
except ConfigError as e:
    sys.exit(f"autoqra: {e}")
config.clear()
config.update(_validated)

# Nothing downloads at run time unless the config names a hub model or dataset (paper scale).
if "hub" not in {m["source"] for m in config["models"].values()} | {config["data"]["source"]}:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

MODELS = sorted(config["models"])
DATASET = config["data"]["name"]


wildcard_constraints:
    model="|".join(MODELS),
    dataset=DATASET,


def get_model_spec(wildcards):
    return config["models"][wildcards.model]


def get_data_inputs(wildcards):
    """The local dataset file (if any), so that editing it re-runs data_prepare."""
    if config["data"]["source"] == "alpaca_file":
        return [config["data"]["path"]]
    return []


def model_dir(config_json):
    """The HF directory of a prepared model, from the path of its config.json."""
    return str(Path(config_json).parent)


def get_final_output():
    out = []
    out += expand("results/data/{dataset}/manifest.json", dataset=DATASET)
    out += expand("results/memory/{model}/budget.json", model=MODELS)
    return out
