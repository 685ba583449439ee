"""The fast validation score used by the search, and the cached plan evaluator.

``score_model`` measures the token-level mean loss on response tokens and, for records that carry
``choices``/``label``, multiple-choice accuracy: each choice is scored as the complete response
(choice tokens + EOS, so "7" does not win as a prefix of "70") by its mean token log-probability
(normalised by length so longer answers are not penalised), and the argmax is the prediction.

``Evaluator.evaluate(plan, fidelity, seed)`` builds the quantized LoRA model, trains it for the
fidelity, scores it on the validation split and writes an evaluation record, cached by
(base model, plan, fidelity, seed, settings, data) so a repeated plan is never re-trained.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from autoqra.data import IGNORE_INDEX, collate, load_split
from autoqra.errors import ConfigError
from autoqra.io import atomic_write_json
from autoqra.manifest import code_sha
from autoqra.memory import MemoryModel, ModelShape
from autoqra.plan import Plan
from autoqra.quant.cache import base_sha
from autoqra.train import (
    INJECTABLE_FAILURES,
    Fidelity,
    TrainingFailed,
    TrainSettings,
    model_device,
    response_loss_sum,
    tokenize_records,
    train_lora,
)

METRICS = ("accuracy", "neg_loss")
GENERAL_SEARCH = "general_search.jsonl"  # the search part of the general text (data_prepare)
RECORD_FORMAT = 1  # bump when the record's meaning changes; old cache entries are then ignored
# The library code a record depends on: its version is part of every cache key, so that changed
# quantization, training or scoring code never reuses a record computed by the old code.
EVAL_CODE = ("evaluate.py", "train.py", "quant", "data", "models", "plan.py", "memory.py")


@dataclass
class EvalSettings:
    """How the validation score is computed."""

    batch_size: int = 8
    max_seq_len: int = 256
    max_examples: int | None = None
    metric: str = "accuracy"
    # General ability in the score: score = task score - general_weight * general-text loss
    # (nats/token on general_examples paragraphs of the search part, each cut at general_max_len).
    general_weight: float = 0.0
    general_examples: int = 16
    general_max_len: int = 128
    # Score a dense copy (dequantized weights + merged LoRA, autoqra.quant.dense) of the trained model:
    # the same function up to float rounding; off by default (an fp32 copy of every projection).
    dense: bool = False

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"eval.metric: {self.metric!r} unknown; expected one of {METRICS}")
        if self.batch_size < 1:
            raise ValueError(f"eval.batch_size must be >= 1, got {self.batch_size}")
        if self.general_weight < 0 or self.general_examples < 1 or self.general_max_len < 2:
            raise ValueError(f"evaluation.general_weight >= 0, general_examples >= 1 and general_max_len >= 2 "
                             f"expected, got {self.general_weight}, {self.general_examples}, {self.general_max_len}")

    def key(self) -> dict[str, Any]:
        """The settings of the task score; the general-text ones only when they are used, so that
        the keys of evaluations without general text stay as they were."""
        d = asdict(self)
        general = {k: d.pop(k) for k in ("general_weight", "general_examples", "general_max_len")}
        if self.general_weight > 0:
            d["general"] = general
        if not d.pop("dense"):  # keys of evaluations scored on the quantized model stay as they were
            return d
        return {**d, "dense": True}

    def task_only(self) -> EvalSettings:
        """The same settings without the general-text term."""
        return replace(self, general_weight=0.0)


def _sequence_scores(model: Any, examples: Sequence[Mapping[str, list[int]]], batch_size: int,
                     pad_id: int) -> list[tuple[float, int]]:
    """(summed response log-prob, response token count) per tokenized example, in input order."""
    device = model_device(model)
    # Identical sequences (the gold answer is usually also a choice) are scored once.
    keys = [(tuple(ex["input_ids"]), tuple(ex["labels"])) for ex in examples]
    unique = list(dict.fromkeys(keys))
    # Length-sorted batches waste little compute on padding.
    unique.sort(key=lambda k: len(k[0]))
    scored: dict[tuple, tuple[float, int]] = {}
    for start in range(0, len(unique), batch_size):
        chunk = unique[start:start + batch_size]
        batch = collate([{"input_ids": list(i), "labels": list(lab)} for i, lab in chunk], pad_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            _, per_seq = response_loss_sum(model, batch)
        counts = (batch["labels"][:, 1:] != IGNORE_INDEX).sum(dim=1)
        for key, s, n in zip(chunk, per_seq.tolist(), counts.tolist(), strict=True):
            scored[key] = (-s, int(n))
    return [scored[k] for k in keys]


def score_model(model: Any, tokenizer: Any, records: Sequence[Mapping[str, Any]],
                settings: EvalSettings) -> dict[str, Any]:
    """Validation loss on response tokens, multiple-choice accuracy (None without choices) and the score."""
    t0 = time.perf_counter()
    records = list(records)[:settings.max_examples] if settings.max_examples else list(records)
    if not records:
        raise ValueError("no evaluation records")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    gold = tokenize_records(tokenizer, records, settings.max_seq_len)
    # Multiple choice costs one forward per choice: only paid for when accuracy is the score.
    mc = [r for r in records if r.get("choices") and r.get("label") is not None] \
        if settings.metric == "accuracy" else []
    options = [{**r, "output": c} for r in mc for c in r["choices"]]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            all_scores = _sequence_scores(model, gold + tokenize_records(tokenizer, options, settings.max_seq_len),
                                          settings.batch_size, pad_id)
    finally:
        model.train(was_training)
    scores, opt_scores = all_scores[:len(gold)], all_scores[len(gold):]
    n_tok = sum(n for _, n in scores)
    loss = -sum(s for s, _ in scores) / max(1, n_tok)
    accuracy = None
    if mc:
        correct, k = 0, 0
        for r in mc:
            per_choice = [s / max(1, n) for s, n in opt_scores[k:k + len(r["choices"])]]
            k += len(r["choices"])
            correct += int(max(range(len(per_choice)), key=per_choice.__getitem__) == r["label"])
        accuracy = correct / len(mc)
    use_acc = settings.metric == "accuracy" and accuracy is not None
    return {"loss": loss, "accuracy": accuracy, "n_examples": len(records), "n_choice_examples": len(mc),
            "eval_seconds": time.perf_counter() - t0, "score": accuracy if use_acc else -loss}


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def data_sha(data_dir: str | os.PathLike, splits: Iterable[str] = ("train", "validation")) -> str:
    """Identity of the splits an evaluation reads: a hash of their file bytes."""
    h = hashlib.sha256()
    for split in splits:
        p = Path(data_dir) / f"{split}.jsonl"
        h.update(split.encode())
        h.update(p.read_bytes() if p.is_file() else b"")
    return h.hexdigest()


class Evaluator:
    """Evaluates plans (build → train for a fidelity → validation score), one cached record per
    (base model, plan, fidelity, seed, settings, data). The base model loads lazily, once."""

    def __init__(self, model_dir: str | os.PathLike, data_dir: str | os.PathLike, cache_dir: str | os.PathLike, *,
                 fidelities: Mapping[str, Fidelity], train: TrainSettings, eval: EvalSettings,
                 lora_dropout: float = 0.05, alpha_per_rank: float = 2.0, device: str | None = None,
                 memory_model: MemoryModel | None = None, inject_failure: Mapping[str, Any] | None = None):
        self.model_dir, self.data_dir, self.cache_dir = Path(model_dir), Path(data_dir), Path(cache_dir)
        self.fidelities = dict(fidelities)
        self.train, self.eval = train, eval
        self.lora_dropout, self.alpha_per_rank, self.device = lora_dropout, alpha_per_rank, device
        self.shape = ModelShape.from_path(self.model_dir)
        self.base_sha = base_sha(self.model_dir)
        self._memory = ({(memory_model.group_size, memory_model.hqq_axis, memory_model.meta_bits): memory_model}
                        if memory_model else {})
        self.train_records = load_split(self.data_dir, "train")
        self.val_records = load_split(self.data_dir, "validation")
        self.data_sha = data_sha(self.data_dir)
        self.code = code_sha(*EVAL_CODE)
        self.general_texts: list[str] = []
        if self.eval.general_weight > 0:  # the search part only: the held-out part is the benchmark
            from autoqra.data.general_text import load_general

            self.general_texts = load_general(self.data_dir / GENERAL_SEARCH)[:self.eval.general_examples]
            self.data_sha = data_sha(self.data_dir, ("train", "validation", GENERAL_SEARCH.removesuffix(".jsonl")))
        self._base: Any = None
        self._train_examples: list[dict] | None = None
        self.n_trained = 0  # trainings run by this evaluator (cache hits do not count)
        # Fault injection (config evaluation.inject_failure): {kind: nan|oom|diverge, fraction}; a plan
        # is hit when its hash falls in the fraction, so the same plans fail in every run.
        self.inject_failure = dict(inject_failure) if inject_failure else None
        if self.inject_failure:
            kind, frac = self.inject_failure.get("kind"), self.inject_failure.get("fraction", 1.0)
            if kind not in INJECTABLE_FAILURES[1:] or not 0.0 <= float(frac) <= 1.0:
                raise ConfigError(f"evaluation.inject_failure: expected kind in {INJECTABLE_FAILURES[1:]} and "
                                  f"fraction in [0, 1], got {self.inject_failure}")
            self.inject_failure = {"kind": kind, "fraction": float(frac)}

    # -- keys and paths -----------------------------------------------------------------
    def fidelity(self, name: str) -> Fidelity:
        if name not in self.fidelities:
            raise ConfigError(f"unknown fidelity {name!r}; configured fidelities: {sorted(self.fidelities)}")
        return self.fidelities[name]

    def settings_key(self, fidelity: Fidelity) -> dict[str, Any]:
        """Everything besides base model, plan and seed that changes a record."""
        key = {"format": RECORD_FORMAT, "fidelity": fidelity.key(), "train": self.train.key(),
               "eval": self.eval.key(), "lora_dropout": self.lora_dropout,
               "alpha_per_rank": self.alpha_per_rank, "data": self.data_sha, "code": self.code,
               **self.compute_key()}
        if self.inject_failure:  # only when set, so that ordinary keys stay as they were
            key["inject_failure"] = self.inject_failure
        return key

    def compute_key(self) -> dict[str, str]:
        """Where the numbers are computed: device type and compute dtype (bf16 on CUDA, float32 on CPU;
        quantized codes and training differ between them, so a record from one never stands for another)."""
        from autoqra.models.layout import default_device, resolve_dtype

        device = self.device or default_device()
        return {"device": torch.device(device).type,
                "compute_dtype": str(resolve_dtype(None, device)).removeprefix("torch.")}

    def injected(self, plan: Plan) -> str | None:
        """The failure injected into ``plan``'s training, if any."""
        return injected_failure(plan.hash, self.inject_failure)

    def record_path(self, plan: Plan, fidelity: str, seed: int) -> Path:
        settings8 = _sha(self.settings_key(self.fidelity(fidelity)))[:8]
        return self.cache_dir / "evals" / self.base_sha[:12] / fidelity / f"{plan.hash}-s{seed}-{settings8}.json"

    def memory_model(self, plan: Plan) -> MemoryModel:
        key = (plan.group_size, plan.hqq_axis, plan.meta_bits)  # plans carry their own per-block quantizers
        if key not in self._memory:
            self._memory[key] = MemoryModel.for_plan(self.shape, plan)
        return self._memory[key]

    def check_plan(self, plan: Plan) -> None:
        """PlanError before any work when the plan cannot apply to this model."""
        plan.check(n_blocks=self.shape.n_blocks, source=f"plan {plan.hash}")

    # -- evaluation -----------------------------------------------------------------------
    def evaluate(self, plan: Plan, fidelity: str, seed: int) -> dict[str, Any]:
        """The evaluation record of ``plan`` at ``fidelity``; from the cache when it exists."""
        fid = self.fidelity(fidelity)
        self.check_plan(plan)
        path = self.record_path(plan, fidelity, seed)
        cached = _read_record(path)
        if cached is not None:
            return {**cached, "cached": True}
        record = self._run(plan, fid, seed)
        # A CUDA OOM depends on the machine and what else runs on it: retry it next time.
        if not (record["status"] == "failed" and str(record["reason"]).startswith("cuda_oom")):
            atomic_write_json(path, record)
        return {**record, "cached": False}

    def evaluate_many(self, plans: Iterable[Plan], fidelity: str, seed: int) -> list[dict[str, Any]]:
        """``evaluate`` for each plan, in order."""
        plans = list(plans)
        for p in plans:  # all user errors before the first (expensive) training
            self.check_plan(p)
        return [self.evaluate(p, fidelity, seed) for p in plans]

    def quant_error(self, plan: Plan) -> dict[str, float]:
        """How much quantization alone hurts: validation loss of the plan's quantized model before
        any fine-tuning (LoRA B = 0, so the adapters are a no-op) minus that of the 16-bit model,
        in nats per response token. Cached per (base, plan, eval settings, data)."""
        self.check_plan(plan)
        pre = self._pre_loss(plan)
        base = self._pre_loss(Plan.uniform(len(plan.bits), 16, plan.ranks[0], "none", plan.group_size,
                                           plan.hqq_axis))
        return {"pre_loss": pre, "base_loss": base, "quant_error": pre - base}

    def _pre_loss(self, plan: Plan) -> float:
        key = _sha({"format": RECORD_FORMAT, "eval": self.eval.task_only().key(),
                    "data": data_sha(self.data_dir), "code": self.code, **self.compute_key()})[:8]
        path = self.cache_dir / "evals" / self.base_sha[:12] / "pre" / f"{plan.hash}-{key}.json"
        cached = _read_record(path)
        if cached is not None:
            return float(cached["pre_loss"])
        from autoqra.quant import build

        self._load()
        built = build(self.model_dir, plan, cache_dir=self.cache_dir, lora_dropout=0.0,
                      alpha_per_rank=self.alpha_per_rank, device=self.device, seed=0, base=self._base)
        try:
            scores = score_model(built.model, built.tokenizer, self.val_records,
                                 replace(self.eval.task_only(), metric="neg_loss"))
        finally:
            del built
            gc.collect()
        atomic_write_json(path, {"status": "ok", "plan_hash": plan.hash, "pre_loss": scores["loss"],
                                 "eval_seconds": scores["eval_seconds"]})
        return float(scores["loss"])

    def _load(self) -> None:
        if self._base is None:
            from autoqra.quant import BaseModel

            self._base = BaseModel(self.model_dir, device=self.device)
            tok = self._base.tokenizer
            self._train_examples = tokenize_records(tok, self.train_records, self.train.max_seq_len)

    def _run(self, plan: Plan, fid: Fidelity, seed: int) -> dict[str, Any]:
        from autoqra.quant import build

        mm = self.memory_model(plan)
        plan_bytes = mm.plan_bytes(plan)
        rec: dict[str, Any] = {
            "plan_hash": plan.hash, "plan": plan.to_dict(), "quantizers": plan.quantizer_label, "fidelity": fid.name, "fidelity_spec": fid.key(),
            "seed": seed, "base_model": self.base_sha, "data": self.data_sha, "status": "ok", "reason": None,
            "score": None, "loss": None, "accuracy": None, "task_score": None, "general_loss": None,
            "train_loss": None, "loss_history": None,
            "memory_bytes": plan_bytes, "total_memory_bytes": plan_bytes + mm.fixed_bytes,
            "peak_memory_bytes": None, "train_seconds": None, "eval_seconds": None, "build_seconds": None,
            "tokens_per_s": None, "steps": None, "trainable_params": None, "device": None,
            "settings": self.settings_key(fid), "cached": False}
        self._load()
        built = None
        try:
            built = build(self.model_dir, plan, cache_dir=self.cache_dir, lora_dropout=self.lora_dropout,
                          alpha_per_rank=self.alpha_per_rank, device=self.device, seed=seed, base=self._base)
            rec.update(build_seconds=built.info["build_seconds"], trainable_params=built.info["trainable_params"],
                       device=built.info["device"])
            self.n_trained += 1
            kind = self.injected(plan)
            train = replace(self.train, inject_failure=kind) if kind else self.train
            res = train_lora(built.model, built.tokenizer, self._train_examples, fid, train, seed)
            rec.update(train_loss=res.final_loss, loss_history=res.loss_history, steps=res.steps,
                       train_seconds=res.train_seconds, tokens_per_s=res.tokens_per_s,
                       peak_memory_bytes=res.peak_memory_bytes)
            model, t_dense = built.model, time.perf_counter()
            if self.eval.dense:
                from autoqra.quant.dense import dense_model

                model = dense_model(built.model)  # the trained model is not used again
            t_dense = time.perf_counter() - t_dense
            scores = score_model(model, built.tokenizer, self.val_records, self.eval)
            scores["eval_seconds"] += t_dense
            t_general = time.perf_counter()
            rec.update(loss=scores["loss"], accuracy=scores["accuracy"], eval_seconds=scores["eval_seconds"])
            if not math.isfinite(scores["loss"]):
                raise TrainingFailed(f"nan_eval_loss: validation loss {scores['loss']}")
            rec["task_score"] = rec["score"] = scores["score"]
            if self.general_texts:
                from autoqra.general_loss import general_text_loss

                gl = general_text_loss(model, built.tokenizer, self.general_texts,
                                       max_len=self.eval.general_max_len, batch_size=self.eval.batch_size)
                rec["general_loss"] = gl["loss"]
                rec["eval_seconds"] += time.perf_counter() - t_general
                if not math.isfinite(gl["loss"]):
                    raise TrainingFailed(f"nan_eval_loss: general-text loss {gl['loss']}")
                rec["score"] = scores["score"] - self.eval.general_weight * gl["loss"]
        except TrainingFailed as e:
            rec.update(status="failed", reason=e.reason, score=None)
        except torch.OutOfMemoryError as e:  # while building or scoring (training converts its own)
            rec.update(status="failed", reason=f"cuda_oom: {str(e).splitlines()[0] if str(e) else 'out of memory'}",
                       score=None)
        finally:
            del built
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        return rec


def injected_failure(plan_hash: str, spec: Mapping[str, Any] | None) -> str | None:
    """``spec['kind']`` when the plan falls in ``spec['fraction']`` of plans (by a hash of its plan
    hash: the same plans in every run), else None."""
    if not spec:
        return None
    u = int(hashlib.sha256(f"{plan_hash}:{spec['kind']}".encode()).hexdigest()[:8], 16) / 16**8
    return spec["kind"] if u < spec.get("fraction", 1.0) else None


def _read_record(path: Path) -> dict[str, Any] | None:
    """A stored record, or None when absent or unreadable (then it is recomputed)."""
    try:
        rec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return rec if isinstance(rec, dict) and "status" in rec else None
