"""What a config asks for, counted before any job runs: per stage, its jobs and each job's work
(tokens trained and scored, optimizer steps, model builds), in the order of the DAG's long path.

Counts follow the Snakemake DAG (workflow/rules/common.smk): shards per phase, pick pairs, methods
× seeds. Where the DAG's size is known only at run time the count is its bound and says so:
the equal-cost random and optuna searches get AutoQRA's Stage-1 + Stage-2 spend in HF-equivalents
(autoqra.search.cost), the noise-robust pick its most (plan, seed) pairs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from autoqra.errors import ConfigError

# Padded tokens per sequence. Synthetic: measured (batches of 4 pad to their longest). Alpaca-style: assumed
# (Alpaca-cleaned with the prompt template is ~180 Llama-3 tokens on average, a batch of 4 pads to
# its longest, ~300), capped by data.max_seq_len.
SEQ_TOKENS = {"synthetic": (28, "measured: synthetic examples, 28.2 SmolLM2 tokens per sequence padded per batch "
                                "of 4 (benchmarks/results/forecast_cpu.json)"),
              "alpaca": (300, "assumed: Alpaca-style examples padded per batch of 4")}
# Rows of known hub datasets (the split the pipeline reads), for n_train: null.
DATASET_ROWS = {"yahma/alpaca-cleaned": 51760, "tatsu-lab/alpaca": 52002}
# lm-eval tasks: (requests per document, documents, tokens per request): the harness's test/validation
# splits and typical lengths (assumed); local tasks from the config's data sizes.
LM_EVAL_TASKS = {"arc_easy": (4, 2376, 60), "arc_challenge": (4, 1172, 70), "boolq": (2, 3270, 160),
                 "hellaswag": (4, 10042, 110), "openbookqa": (4, 500, 40), "piqa": (2, 1838, 60),
                 "winogrande": (2, 1267, 40), "mmlu": (4, 14042, 120), "wikitext": (1, 62, 4000),
                 "gsm8k": (256, 1319, 300)}
# Local tasks, as tokens scored per document: seconds per document on SmolLM2 at the CPU scoring rate.
# lm-eval's HFLM (lm_eval.shared_context: false; benchmarks/results/final_steps_cpu.json): synth_mc
# (one-token choices share their context in lm-eval's batches) 54, synth_gen (prompt + up to 12
# tokens, KV cache) 38, general_text (rolling log-likelihood) 216 per paragraph.
LOCAL_TASKS = {"synth_mc": (1, None, 54), "synth_gen": (1, None, 38), "general_text": (1, None, 216)}
# autoqra.lmeval_model.SharedContextLM (lm_eval.shared_context: true, the default): its seconds per
# request type on 300 + 300 + 42 documents (benchmarks/results/lmeval_speed_cpu.json, dense_shared:
# 31.5, 7.2 and 13.9 s) at the fitted CPU scoring rate: synth_mc computes each prompt once 32, synth_gen
# reuses synth_mc's prompts and decodes 7, general_text packs paragraphs 101 per paragraph.
LOCAL_TASKS_SHARED = {"synth_mc": (1, None, 32), "synth_gen": (1, None, 7), "general_text": (1, None, 101)}
# Held-out general-text paragraphs: the bundled corpus split by data.general_text.heldout_fraction
# (autoqra.data.general_text; 78 at 0.3, 42 at 0.15).
GENERAL_PARAGRAPHS = 260


@dataclass
class Work:
    """One job's work."""

    train_tokens: float = 0.0
    score_tokens: float = 0.0
    steps: float = 0.0
    builds: float = 0.0           # quantized models built from the cache (one per evaluation)
    quantize_weights: float = 0.0  # weights quantized from scratch (cold cache)
    checkpointing: bool = False

    def scaled(self, k: float) -> Work:
        return Work(self.train_tokens * k, self.score_tokens * k, self.steps * k, self.builds * k,
                    self.quantize_weights * k, self.checkpointing)


@dataclass
class Phase:
    """Jobs of one rule that run side by side (one DAG level), each doing ``work``."""

    stage: str
    rule: str
    jobs: int
    work: Work
    plan: str = "budget"           # which plan sizes its memory: budget, 16bit, stage0, lm_eval
    on_path: bool = True           # on the long serial path (else it runs beside it)
    notes: list[str] = field(default_factory=list)


def n_train(cfg: Mapping) -> int:
    d = cfg["data"]
    if d.get("n_train"):
        return int(d["n_train"])
    if d["source"] == "hub" and d.get("id") in DATASET_ROWS:
        return DATASET_ROWS[d["id"]] - int(d["n_val"]) - int(d["n_test"])
    raise ConfigError(f"config key 'data.n_train': needed to count training steps offline for data "
                      f"{d.get('id') or d['source']!r} (known hub sets: {sorted(DATASET_ROWS)})")


def seq_tokens(cfg: Mapping) -> tuple[int, str]:
    kind = "synthetic" if cfg["data"]["source"] == "synthetic" else "alpaca"
    n, src = SEQ_TOKENS[kind]
    return min(n, int(cfg["data"]["max_seq_len"])), src


def fidelity_steps(cfg: Mapping, fid: Mapping, train: Mapping) -> int:
    if fid.get("steps") is not None:
        return int(fid["steps"])
    per = int(train.get("batch_size", 4)) * int(train.get("grad_accum", 1))
    return max(1, math.ceil(n_train(cfg) * float(fid["data_fraction"]) * float(fid["epochs"]) / per))


def eval_work(cfg: Mapping, fidelity: str) -> Work:
    """One search evaluation: build, train at ``fidelity``, score the validation split (+ general text)."""
    tr, ev = cfg["training"], cfg["evaluation"]
    L, _ = seq_tokens(cfg)
    steps = fidelity_steps(cfg, cfg["fidelities"][fidelity], tr)
    seqs = steps * int(tr.get("batch_size", 4)) * int(tr.get("grad_accum", 1))
    n_val = int(cfg["data"]["n_val"])
    n_score = min(int(ev["max_examples"]), n_val) if ev.get("max_examples") else n_val
    per_doc = 5 if ev.get("metric") == "accuracy" and cfg["data"]["source"] == "synthetic" else 1
    score = n_score * per_doc * L
    if float(ev.get("general_weight") or 0) > 0:
        score += int(ev["general_examples"]) * int(ev["general_max_len"])
    return Work(train_tokens=seqs * L, score_tokens=score, steps=steps, builds=1,
                checkpointing=bool(tr.get("grad_checkpointing")))


def finetune_work(cfg: Mapping, method: str) -> Work:
    ft = cfg["finetune"]
    if cfg["methods"][method]["plan"] == "base":
        return Work(builds=1)
    train = {**cfg["training"], **{k: ft[k] for k in ("batch_size", "grad_accum") if k in ft}}
    fid = {k: ft[k] for k in ("steps", "data_fraction", "epochs") if k in ft}
    steps = fidelity_steps(cfg, fid, train)
    L, _ = seq_tokens(cfg)
    seqs = steps * int(train.get("batch_size", 4)) * int(train.get("grad_accum", 1))
    return Work(train_tokens=seqs * L, steps=steps, builds=1,
                checkpointing=bool(ft.get("grad_checkpointing", cfg["training"].get("grad_checkpointing"))))


def lm_eval_work(cfg: Mapping) -> tuple[Work, list[str]]:
    """One lm-eval job: every configured task's requests (limit applied)."""
    le = cfg["lm_eval"]
    limit, n_test = le.get("limit"), int(cfg["data"]["n_test"])
    local = LOCAL_TASKS_SHARED if le.get("shared_context", True) else LOCAL_TASKS
    general = cfg["data"].get("general_text") or {}
    n_general = max(1, round(float(general.get("heldout_fraction", 0.3)) * GENERAL_PARAGRAPHS))
    tokens, notes = 0.0, []
    for task in le["tasks"]:
        if task in local:
            per, docs, length = local[task]
            docs = docs or (n_general if task == "general_text" else n_test)
        elif task in LM_EVAL_TASKS:
            per, docs, length = LM_EVAL_TASKS[task]
        else:
            per, docs, length = 4, 2000, 100
            notes.append(f"lm_eval task {task!r}: size unknown, assumed 2000 documents x 4 requests x 100 tokens")
        if limit:
            docs = min(docs, int(limit) if float(limit) >= 1 else math.ceil(docs * float(limit)))
        tokens += per * docs * length
    return Work(score_tokens=tokens, builds=1), notes
