"""Benchmarking a fine-tuned plan with lm-evaluation-harness (rule lm_eval).

The model is rebuilt with ``autoqra.load`` (quantized base from the cache + trained adapter), by
default turned into its dense scoring copy (``autoqra.quant.dense``: the same function, dense
matmuls), and handed to lm-eval as a model object (``SharedContextLM(pretrained=<model>)``,
:mod:`autoqra.lmeval_model`: lm-eval's HFLM computing each shared prompt once), so what is
benchmarked is the quantized model that was trained, up to float rounding.

Offline tasks over the bundled test split live in ``workflow/resources/lm_eval_tasks/`` as YAML
templates: ``__DATA_DIR__`` is replaced by the absolute path of a prepared copy of the split whose
records carry the exact training prompt (``prompt``, from ``autoqra.data.template``), so the tasks
and the fine-tuning never disagree about the template. Standard tasks (ARC, BoolQ, ...) are used
by name from lm-eval's own registry (they need the datasets in the HF cache or the hub).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from autoqra.errors import ConfigError

DATA_PLACEHOLDER = "__DATA_DIR__"
WORK_DIR = "<lm_eval work dir>"  # stands for the job's scratch directory in a stored result
DOC_COLUMNS = ("task", "doc_id", "metric", "value")  # the per-document file beside the lm-eval JSON
GENERAL_HELDOUT = "general_heldout.jsonl"  # written by data_prepare (autoqra.data.general_text)
CONTEXT_STORE_BYTES = 1 << 30  # SharedContextLM keeps at most this many bytes of stored prompts' keys/values
DEFAULT_MAX_LENGTH = 2048  # lm-eval's context when lm_eval.max_length is null (capped by the model's)


def lm_eval_max_length(model: Any, configured: int | None = None) -> int:
    """The context length lm-eval works in (loglikelihood truncation, rolling windows of wikitext):
    ``configured`` (config key ``lm_eval.max_length``), else min(the model's max positions, 2048).
    Unbounded, HFLM takes the model's own (8,192 on Llama-3, 40,960 on Qwen3) and runs out of memory."""
    if configured is not None:
        if int(configured) < 2:
            raise ConfigError(f"config key 'lm_eval.max_length': expected an integer >= 2, got {configured!r}")
        return int(configured)
    own = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return min(int(own), DEFAULT_MAX_LENGTH) if own else DEFAULT_MAX_LENGTH


def available_local_tasks(task_dir: str | os.PathLike) -> list[str]:
    """Task names defined by the YAML templates under ``task_dir`` (their ``task:`` key)."""
    names = []
    for p in sorted(Path(task_dir).rglob("*.yaml")):
        for line in p.read_text(encoding="utf-8").splitlines():
            if line.startswith("task:"):
                names.append(line.split(":", 1)[1].strip().strip("'\""))
    return names


def prepare_tasks(task_dir: str | os.PathLike, data_dir: str | os.PathLike, work_dir: str | os.PathLike) -> Path:
    """Copy the task templates to ``work_dir/tasks`` with absolute data paths and write the test
    split with rendered prompts to ``work_dir/data`` (and the held-out general text, if
    ``data_dir`` has it, as ``general.jsonl``); returns the include path for lm-eval."""
    from autoqra.data import load_split
    from autoqra.data.template import format_prompt

    work = Path(work_dir).resolve()
    data_out, tasks_out = work / "data", work / "tasks"
    for d in (data_out, tasks_out):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    with open(data_out / "test.jsonl", "w", encoding="utf-8") as fh:
        for rec in load_split(data_dir, "test"):
            fh.write(json.dumps({**rec, "prompt": format_prompt(rec)}) + "\n")
    general = Path(data_dir) / GENERAL_HELDOUT
    if general.is_file():
        shutil.copyfile(general, data_out / "general.jsonl")
    for p in sorted(Path(task_dir).rglob("*.yaml")):
        text = p.read_text(encoding="utf-8").replace(DATA_PLACEHOLDER, str(data_out))
        (tasks_out / p.name).write_text(text, encoding="utf-8")
    return tasks_out


def run_lm_eval(model: Any, tokenizer: Any, tasks: Sequence[str], *, include_path: str | os.PathLike | None,
                limit: int | None = None, batch_size: int = 16, num_fewshot: int | None = None,
                seed: int = 0, device: str | None = None, per_doc: bool = True,
                max_length: int | None = None, shared_context: bool = True) -> dict[str, Any]:
    """``lm_eval.simple_evaluate`` on a model object; the JSON-ready result (results, versions,
    n-shot, n-samples, configs, higher_is_better, the ``max_length`` used: :func:`lm_eval_max_length`)
    and, with ``per_doc``, ``docs``: each document's metric values (``doc_rows``; the prompts and model
    outputs lm-eval logs are not kept). ``shared_context`` scores with
    :class:`autoqra.lmeval_model.SharedContextLM` (each distinct context run once), else lm-eval's HFLM."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import handle_non_serializable

    local = available_local_tasks(include_path) if include_path else []
    # Indexing lm-eval's own registry costs ~9 s: only when a task is not one of ours.
    tm = TaskManager(include_path=str(include_path) if include_path else None,
                     include_defaults=not set(tasks) <= set(local))
    unknown = [t for t in tasks if t not in tm.all_tasks]
    if unknown:
        raise ConfigError(f"config key 'lm_eval.tasks': unknown task(s) {unknown}; offline tasks are "
                          f"{local} or a task of lm-eval's registry")
    if device is None:
        device = str(next(model.parameters()).device)
    if shared_context:
        from autoqra.lmeval_model import SharedContextLM
    lm_class = SharedContextLM if shared_context else HFLM
    lm = lm_class(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=device,
              max_length=lm_eval_max_length(model, max_length))
    out = simple_evaluate(model=lm, tasks=list(tasks), num_fewshot=num_fewshot, limit=limit, task_manager=tm,
                          log_samples=per_doc, bootstrap_iters=0, random_seed=seed, numpy_random_seed=seed,
                          torch_random_seed=seed, fewshot_random_seed=seed)
    keep = ("results", "groups", "group_subtasks", "configs", "versions", "n-shot", "higher_is_better", "n-samples")
    result = json.loads(json.dumps({k: out[k] for k in keep if k in out}, default=handle_non_serializable))
    result["max_length"] = int(lm.max_length)
    if getattr(lm, "request_seconds", None):
        result["request_seconds"] = dict(lm.request_seconds)  # SharedContextLM: wall seconds per request type
    if per_doc:
        result["docs"] = doc_rows(out.get("samples") or {}, tokenizer)
    return result


def doc_rows(samples: Mapping[str, Sequence[Mapping[str, Any]]], tokenizer: Any = None) -> list[dict[str, Any]]:
    """(task, doc_id, metric, value) rows from lm-eval's logged samples.

    A per-document metric value is kept as it is (``acc`` 0/1, ``exact_match[first_line]``; a
    non-default filter is named as in ``tidy_results``). The perplexity metrics of
    ``loglikelihood_rolling`` tasks log a (log-likelihood, count) pair per document; they become
    rows ``loglikelihood`` (nats), ``words`` and ``bytes`` (lm-eval's counts) and, with a
    tokenizer, ``tokens`` (the text's token count, so that nats/token can be derived), from which
    ``autoqra.taskmetrics`` re-aggregates every corpus-level metric.
    """
    rows = []
    for task, examples in sorted(samples.items()):
        for ex in examples:
            filt, doc = ex.get("filter", "none"), int(ex["doc_id"])
            for metric in ex.get("metrics", []):
                value = ex.get(metric)
                if isinstance(value, list | tuple) and len(value) == 2:  # (loglikelihood, words|bytes)
                    counts = {"word_perplexity": "words", "byte_perplexity": "bytes", "bits_per_byte": "bytes"}
                    if metric not in counts:
                        raise ValueError(f"task {task}: per-document metric {metric} is a pair; expected one of "
                                         f"{sorted(counts)}")
                    rows.append({"task": task, "doc_id": doc, "metric": "loglikelihood", "value": float(value[0])})
                    rows.append({"task": task, "doc_id": doc, "metric": counts[metric], "value": float(value[1])})
                elif isinstance(value, int | float):
                    name = metric if filt == "none" else f"{metric}[{filt}]"
                    rows.append({"task": task, "doc_id": doc, "metric": name, "value": float(value)})
            if tokenizer is not None and any(isinstance(ex.get(m), list | tuple) for m in ex.get("metrics", [])):
                text = ex.get("target")
                n = len(tokenizer(str(text), add_special_tokens=False)["input_ids"])
                rows.append({"task": task, "doc_id": doc, "metric": "tokens", "value": float(n)})
    # loglikelihood and the byte count appear once per perplexity metric: keep one of each
    unique = {(r["task"], r["doc_id"], r["metric"]): r for r in rows}
    return sorted(unique.values(), key=lambda r: (r["task"], r["doc_id"], r["metric"]))


def tidy_results(results: dict[str, Any]) -> list[dict[str, Any]]:
    """(task, metric, value, stderr) rows from lm-eval's ``results`` block (filter suffix dropped:
    ``acc,none`` → ``acc``; a non-default filter is kept as ``exact_match[first_line]``)."""
    rows = []
    for task, metrics in sorted(results.get("results", {}).items()):
        for key, value in sorted(metrics.items()):
            if "," not in key or "_stderr" in key or not isinstance(value, int | float):
                continue
            metric, filt = key.split(",", 1)
            name = metric if filt == "none" else f"{metric}[{filt}]"
            stderr = metrics.get(f"{metric}_stderr,{filt}")
            rows.append({"task": task, "metric": name, "value": float(value),
                         "stderr": float(stderr) if isinstance(stderr, int | float) else None})
    return rows


def lm_eval_identity(model_dir: str | os.PathLike, plan: Any, adapter: str | os.PathLike, cfg: Mapping[str, Any], *,
                     task_dir: str | os.PathLike, data_dir: str | os.PathLike, seed: int,
                     device: str | None = None) -> dict[str, Any]:
    """Everything one lm-eval run's result depends on (its hash is the shared-run key,
    :mod:`autoqra.runstore`): the base, the plan, the adapter's trained weights and config, the settings,
    the task files and the documents they read, the seed and the run environment."""
    from autoqra.finetune import run_environment
    from autoqra.models.sources import sha256_file
    from autoqra.quant.cache import base_sha
    from autoqra.runstore import tree_sha

    adapter, data_dir = Path(adapter), Path(data_dir)
    docs = {name: sha256_file(data_dir / name) for name in ("test.jsonl", GENERAL_HELDOUT) if (data_dir / name).is_file()}
    return {"base_sha256": base_sha(model_dir), "plan_hash": plan.hash,
            "adapter_weights_sha256": sha256_file(adapter / "adapter_model.safetensors"),
            "adapter_config_sha256": sha256_file(adapter / "adapter_config.json"),
            "lm_eval": dict(cfg), "tasks_sha256": tree_sha(task_dir), "documents_sha256": docs, "seed": int(seed),
            **run_environment(device)}


def evaluate_adapter(model_dir: str | os.PathLike, plan_path: str | os.PathLike, adapter: str | os.PathLike,
                     cfg: Mapping[str, Any], *, task_dir: str | os.PathLike, data_dir: str | os.PathLike,
                     work_dir: str | os.PathLike, cache_dir: str | os.PathLike, seed: int) -> tuple[dict, list[dict]]:
    """lm-eval on a plan's model rebuilt with ``autoqra.load`` (scored through its dense copy when
    ``cfg['dense']``: the same function, dense matmuls): the result and its per-document rows."""
    import autoqra
    from autoqra.quant.dense import dense_model

    built = autoqra.load(Path(model_dir), plan_path, adapter, cache_dir=cache_dir)
    model = dense_model(built.model) if cfg.get("dense", True) else built.model
    include = prepare_tasks(task_dir, data_dir, work_dir)
    try:
        out = run_lm_eval(model, built.tokenizer, cfg["tasks"], include_path=include, limit=cfg["limit"],
                          batch_size=cfg["batch_size"], num_fewshot=cfg["num_fewshot"], seed=seed,
                          max_length=cfg["max_length"], shared_context=cfg.get("shared_context", True))
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    # the task configs name files of the job's scratch directory (deleted above): name it WORK_DIR, so
    # that a result does not depend on which method's job computed it (a shared run's copy is the same)
    out = json.loads(json.dumps(out).replace(json.dumps(str(Path(work_dir).resolve()))[1:-1], WORK_DIR))
    docs = out.pop("docs")
    out["plan_hash"] = built.plan.hash
    return out, docs
