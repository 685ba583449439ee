"""The LoRA fine-tuning loop for one fidelity (a fixed step count, or a data fraction × epochs).

Only adapter parameters train (AdamW); the quantized base is frozen. The learning rate warms up
linearly for ``warmup_steps`` (or ``warmup_ratio`` of the steps) and then stays constant
(``lr_schedule="constant"``, the default: short low-fidelity runs would otherwise spend most of their
steps at a tiny tail), decays linearly to zero (``"linear"``, HF Trainer's default and the authors'
release) or follows a cosine to zero (``"cosine"``). The loss is the token-level mean over response tokens of an
optimizer step (micro-batches weighted by their supervised tokens, so ``grad_accum`` does not change
it). A run is deterministic for a seed: a seeded ``torch.Generator`` picks the data subset and
order, ``torch.manual_seed(seed)`` drives dropout. CPU computes in float32, CUDA under bf16 autocast.

Divergence: a bias-corrected EMA of the step loss (β = 0.9, about a 10-step window) is compared with
its own running minimum; the run has diverged when the smoothed loss exceeds ``divergence_factor``
× that minimum (single noisy batches move the EMA by a tenth of their excess only).

Peak memory: on CUDA ``max_memory_allocated``; on CPU the tensors the run holds (weights,
quantization metadata, adapters, gradients, optimizer state) plus the largest set of activations
autograd saved in one forward pass (counted with saved-tensor hooks, distinct storages once).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from autoqra.data import IGNORE_INDEX, collate, tokenize_example
from autoqra.quant.backends import keep_training_layout
from autoqra.schedule import DivergenceGuard, lr_factor
from autoqra.train_memory import SavedActivations, held_tensor_bytes, storage_ptrs

__all__ = ["Fidelity", "TrainResult", "TrainSettings", "TrainingFailed", "held_tensor_bytes", "train_lora"]

INJECTABLE_FAILURES = (None, "nan", "oom", "diverge")  # fault injection, to test the failure paths
LR_SCHEDULES = ("constant", "linear", "cosine")


class TrainingFailed(RuntimeError):
    """A training run that cannot produce a usable model (NaN loss, divergence, CUDA OOM)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class TrainSettings:
    """Optimisation hyper-parameters shared by every fidelity."""

    lr: float = 2e-4
    batch_size: int = 4
    grad_accum: int = 1
    max_seq_len: int = 256
    weight_decay: float = 0.0
    warmup_steps: int = 0
    warmup_ratio: float | None = None  # fraction of the run's steps; replaces warmup_steps when set
    lr_schedule: str = "constant"
    max_grad_norm: float = 1.0
    grad_checkpointing: bool = False
    divergence_factor: float | None = 3.0
    progress: bool = True
    inject_failure: str | None = None

    def __post_init__(self) -> None:
        for name in ("batch_size", "grad_accum", "max_seq_len"):
            if getattr(self, name) < (2 if name == "max_seq_len" else 1):
                raise ValueError(f"train.{name} is too small: {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"train.lr must be > 0, got {self.lr}")
        if self.warmup_ratio is not None and not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.warmup_ratio is not None and self.warmup_steps:
            raise ValueError("train: give warmup_steps or warmup_ratio, not both")
        for name, allowed in (("lr_schedule", LR_SCHEDULES), ("inject_failure", INJECTABLE_FAILURES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"train.{name}: {getattr(self, name)!r} unknown; expected one of {allowed}")

    def key(self) -> dict[str, Any]:
        """Settings that change a run's result (progress display excluded), for cache keys."""
        d = asdict(self)
        d.pop("progress")
        if d["warmup_ratio"] is None:  # unset: keys stay as they were before the setting existed
            d.pop("warmup_ratio")
        return d

    def warmup(self, total_steps: int) -> int:
        """Warm-up steps of a run of ``total_steps``."""
        if self.warmup_ratio is not None:
            return math.ceil(self.warmup_ratio * total_steps)
        return self.warmup_steps


@dataclass(frozen=True)
class Fidelity:
    """How much training one evaluation gets: ``steps``, or ``data_fraction`` × ``epochs``."""

    name: str
    steps: int | None = None
    data_fraction: float | None = None
    epochs: float | None = None

    def __post_init__(self) -> None:
        where = f"fidelity {self.name!r}"
        by_data = self.data_fraction is not None or self.epochs is not None
        if self.steps is not None and by_data:
            raise ValueError(f"{where}: give either 'steps' or 'data_fraction' and 'epochs', not both")
        if self.steps is not None:
            if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
                raise ValueError(f"{where}: 'steps' must be a positive integer, got {self.steps!r}")
            return
        for key, other in (("data_fraction", "epochs"), ("epochs", "data_fraction")):
            value = getattr(self, key)
            if value is None:
                raise ValueError(f"{where}: '{key}' is required (with '{other}') when 'steps' is not given")
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{where}: '{key}' must be a positive number, got {value!r}")
        if self.data_fraction > 1:
            raise ValueError(f"{where}: 'data_fraction' must be in (0, 1], got {self.data_fraction!r}")

    @classmethod
    def from_dict(cls, name: str, d: Mapping[str, Any]) -> Fidelity:
        """From a config entry such as ``{"data_fraction": 0.05, "epochs": 0.1}``."""
        unknown = sorted(set(d) - {"steps", "data_fraction", "epochs"})
        if unknown:
            raise ValueError(f"fidelity {name!r}: unknown key(s) {unknown}; allowed: steps, data_fraction, epochs")
        return cls(name, d.get("steps"), d.get("data_fraction"), d.get("epochs"))

    def subset_size(self, n_train: int) -> int:
        """Training examples this fidelity draws from (all of them for step budgets)."""
        if self.data_fraction is None:
            return n_train
        return max(1, min(n_train, math.ceil(n_train * self.data_fraction)))

    def num_steps(self, n_train: int, settings: TrainSettings) -> int:
        """Optimizer steps: ``steps``, or ceil(n_train·fraction·epochs / (batch·accum)), at least 1."""
        if self.steps is not None:
            return self.steps
        per_step = settings.batch_size * settings.grad_accum
        return max(1, math.ceil(n_train * self.data_fraction * self.epochs / per_step))

    def key(self) -> dict[str, Any]:
        """The spec (name excluded: two names for the same budget share results)."""
        return {"steps": self.steps, "data_fraction": self.data_fraction, "epochs": self.epochs}


@dataclass
class TrainResult:
    steps: int
    train_seconds: float
    tokens: int
    tokens_per_s: float
    loss_history: list[float]
    final_loss: float
    peak_memory_bytes: int
    device: str
    trainable_params: int
    n_examples: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tokenize_records(tokenizer: Any, records: Sequence[Mapping[str, Any]], max_len: int) -> list[dict]:
    """Tokenize once; records that already carry ``input_ids``/``labels`` pass through."""
    return [r if "input_ids" in r else tokenize_example(tokenizer, r, max_len) for r in records]


def model_device(model: Any) -> torch.device:
    return next(model.parameters()).device


def _batch_indices(gen: torch.Generator, pool: torch.Tensor, n_batches: int, batch_size: int) -> list[list[int]]:
    """``n_batches`` full batches from a stream of reshuffled passes over ``pool`` (an epoch = one pass)."""
    need = n_batches * batch_size
    stream: list[int] = []
    while len(stream) < need:
        stream.extend(pool[torch.randperm(len(pool), generator=gen)].tolist())
    return [stream[i * batch_size:(i + 1) * batch_size] for i in range(n_batches)]


def logit_positions(labels: torch.Tensor) -> int:
    """Positions whose logits the loss needs: from the first one that predicts a response token.
    Prompts are most of every sequence, and the vocabulary projection (+ its float32 copy) is the
    costliest layer."""
    needed = (labels[:, 1:] != IGNORE_INDEX).any(dim=0)
    first = int(needed.int().argmax()) if bool(needed.any()) else 0
    return labels.shape[1] - first


def response_loss_sum(model: Any, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed next-token cross-entropy over supervised tokens, per-sequence sums) in float32."""
    labels = batch["labels"]
    keep = logit_positions(labels)
    first = labels.shape[1] - keep
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False,
                   logits_to_keep=keep).logits
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), labels[:, first + 1:],
                                           ignore_index=IGNORE_INDEX, reduction="none")
    per_seq = ce.sum(dim=1)
    return per_seq.sum(), per_seq


def train_lora(model: Any, tokenizer: Any, records: Sequence[Mapping[str, Any]], fidelity: Fidelity,
               settings: TrainSettings, seed: int) -> TrainResult:
    """Fine-tune the trainable (LoRA) parameters of ``model`` for ``fidelity``; TrainingFailed on NaN,
    divergence or CUDA OOM."""
    from tqdm.auto import tqdm

    keep_training_layout(model)  # NF4 layers never enter bnb's CPU inference layout (no input gradient)
    params = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in params)
    assert n_trainable > 0, "model has no trainable parameters (expected LoRA adapters)"
    if not records:
        raise ValueError("no training records")
    examples = tokenize_records(tokenizer, records, settings.max_seq_len)
    device = model_device(model)
    on_cuda = device.type == "cuda"
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    gen = torch.Generator().manual_seed(seed)
    n_pool = fidelity.subset_size(len(examples))
    pool = torch.randperm(len(examples), generator=gen)[:n_pool]
    steps = fidelity.num_steps(len(examples), settings)
    micro = _batch_indices(gen, pool, steps * settings.grad_accum, settings.batch_size)
    torch.manual_seed(seed)

    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(settings, steps))
    saved = None if on_cuda else SavedActivations(storage_ptrs(model))
    was_training = model.training
    model.train()
    if settings.grad_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    if on_cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    history: list[float] = []
    lrs: list[float] = []
    guard = DivergenceGuard(settings.divergence_factor)
    tokens = 0
    widest = {"batch_size": 0, "seq_len": 0, "logit_len": 0}  # the largest micro-batch's shape
    bar = tqdm(total=steps, desc=f"train {fidelity.name}", unit="step", disable=not settings.progress, leave=False)
    t0 = time.perf_counter()
    try:
        for step in range(1, steps + 1):
            chunk = micro[(step - 1) * settings.grad_accum:step * settings.grad_accum]
            batches = [collate([examples[i] for i in idx], pad_id) for idx in chunk]
            n_sup = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches)
            step_loss = 0.0
            for batch in batches:
                batch = {k: v.to(device) for k, v in batch.items()}
                tokens += int(batch["attention_mask"].sum())
                shape = {"batch_size": batch["labels"].shape[0], "seq_len": batch["labels"].shape[1],
                         "logit_len": logit_positions(batch["labels"])}
                widest = max(widest, shape, key=lambda d: (d["batch_size"] * d["seq_len"], d["logit_len"]))
                if settings.inject_failure == "oom" and step == 1:
                    raise torch.OutOfMemoryError("injected out-of-memory (inject_failure='oom')")
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_cuda), \
                        (saved.hooks() if saved else contextlib.nullcontext()):
                    loss_sum, _ = response_loss_sum(model, batch)
                if saved:
                    saved.forward_done()
                loss = loss_sum / max(1, n_sup)
                if settings.inject_failure == "nan" and step == 1:
                    loss = loss * float("nan")
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise TrainingFailed(f"nan_loss at step {step}")
                loss.backward()
                step_loss += value
            if settings.max_grad_norm and settings.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
            lrs.append(sched.get_last_lr()[0])
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=False)  # keep grads allocated so the memory count includes them
            if settings.inject_failure == "diverge" and step > 1:
                step_loss *= 100.0  # the recorded loss explodes after the first step
            history.append(step_loss)
            reason = guard.update(step_loss)
            if reason:
                raise TrainingFailed(f"{reason} at step {step}")
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.4f}")
        if on_cuda:
            torch.cuda.synchronize(device)
    except torch.OutOfMemoryError as e:
        opt.zero_grad(set_to_none=True)
        del opt
        if on_cuda:
            torch.cuda.empty_cache()
        raise TrainingFailed(f"cuda_oom: {str(e).splitlines()[0] if str(e) else 'out of memory'}") from None
    finally:
        bar.close()
        if settings.grad_checkpointing:
            model.gradient_checkpointing_disable()
            model.disable_input_require_grads()
        model.train(was_training)
    seconds = time.perf_counter() - t0
    held = held_tensor_bytes(model, opt)
    peak = torch.cuda.max_memory_allocated(device) if on_cuda else held + saved.peak
    tail = history[-max(1, math.ceil(0.1 * len(history))):]
    return TrainResult(steps=steps, train_seconds=seconds, tokens=tokens, tokens_per_s=tokens / max(seconds, 1e-9),
                       loss_history=history, final_loss=sum(tail) / len(tail), peak_memory_bytes=int(peak),
                       device=str(device), trainable_params=n_trainable, n_examples=n_pool,
                       extra={"lr_final": sched.get_last_lr()[0], "lr_schedule": settings.lr_schedule,
                              "warmup_steps": settings.warmup(steps), "lr_history": lrs,
                              "held_tensor_bytes": held, "widest_batch": widest,
                              "saved_activation_bytes": None if saved is None else saved.peak})
