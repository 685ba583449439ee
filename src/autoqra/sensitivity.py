"""Stage 0: per-block sensitivity priors ``I_q`` (quantization fidelity) and ``I_r`` (adapter plasticity).

- ``I_q(ℓ)``: mean per-token Jensen–Shannon divergence (nats) between the 16-bit model's next-token
  distribution and that of the model with block ℓ alone at the lowest bit-width, on calibration text.
- ``I_r(ℓ)``: how much the fine-tuning loss gains from adapter capacity at block ℓ; see ``plasticity``
  for the two estimators (``grad_norm``, default, and ``loss_drop``).

Both are min-max normalised to [0, 1]; ``combined`` is their mean. Deterministic for a seed.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autoqra.data import collate, format_prompt, load_split, tokenize_example
from autoqra.errors import DatasetError
from autoqra.io import atomic_write_tsv
from autoqra.plan import DEFAULT_BITS_LADDER, DEFAULT_HQQ_AXIS, Plan
from autoqra.quant.build import BaseModel, build, quantize_base
from autoqra.quant.cache import QuantCache

log = logging.getLogger(__name__)

PRIOR_COLUMNS = ("block", "iq_raw", "iq_norm", "ir_raw", "ir_norm", "combined")
PLASTICITY_METHODS = ("grad_norm", "loss_drop")


@dataclass
class SensitivitySettings:
    """Stage-0 knobs; saved in the summary beside the priors."""

    n_calib: int = 16  # calibration sequences
    calib_len: int = 128  # tokens per calibration sequence
    calib_source: str = "data"  # "data" (training split, prompt template + response) or a plain-text file
    calib_batch_size: int = 4
    low_bits: int | None = None  # None: the lowest rung of bits_ladder
    bits_ladder: tuple[int, ...] = DEFAULT_BITS_LADDER
    plasticity: str = "grad_norm"  # or "loss_drop"
    r_max: int = 16
    grad_batches: int = 4  # batches averaged for grad_norm; held-out batches for loss_drop
    batch_size: int = 4
    max_seq_len: int = 256
    loss_drop_steps: int = 10
    lr: float = 1e-3  # loss_drop only; a 10-step probe needs a larger step than full fine-tuning
    alpha_per_rank: float = 2.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.plasticity not in PLASTICITY_METHODS:
            raise ValueError(f"sensitivity.plasticity: expected one of {list(PLASTICITY_METHODS)}, "
                             f"got {self.plasticity!r}")
        for key in ("n_calib", "calib_len", "calib_batch_size", "r_max", "grad_batches", "batch_size",
                    "loss_drop_steps"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"sensitivity.{key}: expected a positive integer, got {getattr(self, key)!r}")
        self.bits_ladder = tuple(int(b) for b in self.bits_ladder)

    @property
    def resolved_low_bits(self) -> int:
        """The bit-width every block is probed at."""
        bits = int(self.low_bits if self.low_bits is not None else min(self.bits_ladder))
        if bits >= 16:
            raise ValueError(f"sensitivity.low_bits: {bits}-bit is not quantized; expected one of 2, 3, 4, 8")
        return bits


# -- calibration data ------------------------------------------------------------------
def calibration_ids(tokenizer: Any, settings: SensitivitySettings, records: list[dict] | None = None) -> torch.Tensor:
    """``(n, calib_len)`` token windows cut from concatenated calibration text (n ≤ n_calib)."""
    need = settings.n_calib * settings.calib_len
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    if settings.calib_source == "data":
        if not records:
            raise DatasetError("sensitivity calibration: the training split has no records")
        order = list(range(len(records)))
        random.Random(settings.seed).shuffle(order)
        for i in order:  # rendered exactly as the model sees them in fine-tuning
            r = records[i]
            ids += tokenizer(format_prompt(r) + str(r["output"]), add_special_tokens=False)["input_ids"] + [eos]
            if len(ids) >= need:
                break
        where = "the training split"
    else:
        path = Path(settings.calib_source)
        if not path.is_file():
            raise DatasetError(f"sensitivity.calib_source: {path} is not a file (expected 'data' or a "
                               "plain-text file)")
        with open(path, encoding="utf-8") as fh:
            for line in fh:  # line by line: only the first ``need`` tokens are ever tokenized
                ids += tokenizer(line, add_special_tokens=False)["input_ids"]
                if len(ids) >= need:
                    break
        where = str(path)
    n = min(settings.n_calib, len(ids) // settings.calib_len)
    if n == 0:
        raise DatasetError(f"sensitivity calibration: {where} has {len(ids)} tokens, fewer than one "
                           f"window of calib_len={settings.calib_len}")
    return torch.tensor(ids[: n * settings.calib_len], dtype=torch.long).view(n, settings.calib_len)


# -- fidelity I_q ------------------------------------------------------------------------
def jsd_from_logits(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-position Jensen–Shannon divergence (nats, in [0, ln 2]) between softmax(a) and softmax(b)."""
    return _jsd_logp(torch.log_softmax(a.float(), -1), torch.log_softmax(b.float(), -1))


def _jsd_logp(lp: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    # log M = log(½(P+Q)) in log space: no underflow for tokens either model finds improbable.
    lm = torch.logaddexp(lp, lq) - math.log(2.0)
    kl_pm = (lp.exp() * (lp - lm)).sum(-1)
    kl_qm = (lq.exp() * (lq - lm)).sum(-1)
    return (0.5 * (kl_pm + kl_qm)).clamp(0.0, math.log(2.0))  # clamp rounding only


def _forward_from(model: Any, block: int, hidden: torch.Tensor) -> torch.Tensor:
    """Logits from block ``block`` on, given its input hidden states (earlier blocks are unchanged)."""
    inner = model.get_submodule("model")  # the LlamaModel/Qwen*Model inside the CausalLM
    layers = inner.layers
    inner.layers = torch.nn.ModuleList(list(layers)[block:])  # on a structural copy: the base is untouched
    try:
        return model(inputs_embeds=hidden, use_cache=False).logits
    finally:
        inner.layers = layers


@torch.no_grad()
def _reference(model: Any, calib: torch.Tensor, bs: int, device: str) -> tuple[list, list]:
    """Per batch: the base's log-probs and every block's input hidden states."""
    ref, hidden, seen = [], [], []
    hooks = [layer.register_forward_pre_hook(
        lambda _m, args, kwargs: seen.append(args[0] if args else kwargs["hidden_states"]), with_kwargs=True)
        for layer in model.get_submodule("model").layers]
    try:
        for i in range(0, len(calib), bs):
            logits = model(input_ids=calib[i:i + bs].to(device), use_cache=False).logits
            ref.append(torch.log_softmax(logits.float(), -1))
            hidden.append(list(seen))
            seen.clear()
    finally:
        for h in hooks:
            h.remove()
    return ref, hidden


def _mean_jsd(model: Any, block: int | None, calib: torch.Tensor, bs: int, device: str, ref: list,
              hidden: list, n_batches: int | None = None) -> float:
    """Mean per-token JSD against ``ref``; from ``block`` on with cached inputs unless ``block`` is None."""
    total, count = 0.0, 0
    for j, i in enumerate(range(0, len(calib), bs)[:n_batches]):
        ids = calib[i:i + bs].to(device)
        logits = (model(input_ids=ids, use_cache=False).logits if block is None
                  else _forward_from(model, block, hidden[j][block]))
        total += _jsd_logp(ref[j], torch.log_softmax(logits.float(), -1)).double().sum().item()
        count += ids.numel()
    return total / count


@torch.no_grad()
def fidelity_sensitivity(base: BaseModel, cache: QuantCache, settings: SensitivitySettings, quantizer: str,
                         group_size: int, calib: torch.Tensor | None = None, hqq_axis: int = DEFAULT_HQQ_AXIS,
                         records: list[dict] | None = None) -> np.ndarray:
    """Raw ``I_q``: mean per-token JSD between the 16-bit base and the base with block ℓ alone at low bits.

    Blocks before ℓ are identical in both models, so each probe starts from block ℓ's cached input
    (about half the compute); this shortcut is checked once against a full forward and dropped if
    it does not reproduce the base (e.g. per-layer attention types it would misalign).
    """
    if quantizer == "none":  # a 16-bit-only search has no quantizer to probe with
        raise ValueError("sensitivity: quantizer 'none' does not quantize; the lowest rung needs hqq, nf4 or int8")
    low = settings.resolved_low_bits
    if calib is None:
        calib = calibration_ids(base.tokenizer, settings, records)
    bs, n, dev = settings.calib_batch_size, base.n_blocks, base.device
    ref, hidden = _reference(base.model, calib, bs, dev)  # computed once, reused for every block
    same = quantize_base(base, Plan.uniform(n, 16, 1, "none", group_size), cache)  # all-16-bit copy
    uniform_layers = len(set(getattr(base.model.config, "layer_types", None) or ["one"])) == 1
    shortcut = uniform_layers and _mean_jsd(same, n // 2, calib, bs, dev, ref, hidden, n_batches=1) < 1e-7
    del same
    log.info("I_q: %d blocks at %d-bit, %d calibration tokens, probes start at block ℓ: %s",
             n, low, calib.numel(), shortcut)
    iq = np.zeros(n)
    for block in range(n):
        bits = tuple(low if b == block else 16 for b in range(n))
        quantizers = tuple(quantizer if b == block else "none" for b in range(n))
        model = quantize_base(base, Plan(bits, (1,) * n, quantizers, group_size, hqq_axis), cache)
        iq[block] = _mean_jsd(model, block if shortcut else None, calib, bs, dev, ref, hidden)
        del model  # one block's quantized copy alive at a time
        log.info("I_q block %d/%d: %.5f", block + 1, n, iq[block])
    return iq


# -- plasticity I_r ----------------------------------------------------------------------
def _batches(tokenizer: Any, records: list[dict], settings: SensitivitySettings, n_batches: int,
             offset: int = 0) -> list[dict[str, torch.Tensor]]:
    """``n_batches`` response-only-loss batches from a seeded permutation (cycled if short)."""
    order = torch.randperm(len(records), generator=torch.Generator().manual_seed(settings.seed)).tolist()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = []
    for b in range(n_batches):
        idx = [order[(offset + b * settings.batch_size + j) % len(order)] for j in range(settings.batch_size)]
        out.append(collate([tokenize_example(tokenizer, records[i], settings.max_seq_len) for i in idx], pad))
    return out


def _loss(model: Any, batch: dict[str, torch.Tensor], device: str) -> torch.Tensor:
    return model(**{k: v.to(device) for k, v in batch.items()}, use_cache=False).loss


def _lora_params(model: Any, block: int, kind: str = "lora_") -> list[torch.nn.Parameter]:
    prefix = f".layers.{block}."
    return [p for name, p in model.named_parameters() if prefix in name and kind in name]


def plasticity(base: BaseModel, cache: QuantCache, tokenizer: Any, records: list[dict],
               settings: SensitivitySettings) -> np.ndarray:
    """Raw ``I_r`` per block, by ``settings.plasticity``.

    ``grad_norm`` (default; cost: ``grad_batches`` forward+backward passes in all). Rank-``r_max``
    LoRA on every block of the 16-bit model. At init B = 0, so ∇_A L = Bᵀ(…) = 0 while
    ∇_B L = (∂L/∂h)(A x)ᵀ·α/r ≠ 0: the first SGD step of size η on block ℓ's adapter lowers the
    loss by η·‖∇_{B_ℓ} L‖² to first order. I_r(ℓ) is ‖∇_{B_ℓ} L‖² summed over the block's 7
    projections and averaged over ``grad_batches`` batches of task data (loss on response tokens).

    ``loss_drop`` (cost: n_blocks × ``loss_drop_steps`` forward+backward passes plus n_blocks ×
    ``grad_batches`` evaluation passes — for 30 blocks and 10 steps, ~300 training steps). For each
    block ℓ, a rank-``r_max`` adapter that trains at ℓ only (all other adapters frozen at B = 0,
    i.e. inactive) is trained for ``loss_drop_steps`` AdamW steps from the same seeded init on the
    same batches; I_r(ℓ) = held-out loss before − after (held out: ``grad_batches`` batches of
    other training records, disjoint while the split is large enough). Negative if a block overfits.
    """
    n = base.n_blocks
    cache_dir = cache.cache_dir
    built = build(base.model_dir, Plan.uniform(n, 16, settings.r_max, "none"), cache_dir=cache_dir,
                  base=base, seed=settings.seed, lora_dropout=0.0, alpha_per_rank=settings.alpha_per_rank)
    model = built.model
    model.eval()  # no dropout anywhere: the probe is deterministic
    if settings.plasticity == "grad_norm":
        ir = np.zeros(n)
        for batch in _batches(tokenizer, records, settings, settings.grad_batches):
            model.zero_grad(set_to_none=True)
            _loss(model, batch, base.device).backward()
            for block in range(n):
                ir[block] += sum(p.grad.double().pow(2).sum().item() for p in _lora_params(model, block, "lora_B"))
        return ir / settings.grad_batches
    held_out = _batches(tokenizer, records, settings, settings.grad_batches)
    train = _batches(tokenizer, records, settings, settings.loss_drop_steps,
                     offset=settings.grad_batches * settings.batch_size)
    init = {name: p.detach().clone() for name, p in model.named_parameters() if "lora_" in name}

    def held_out_loss() -> float:
        with torch.no_grad():
            return float(np.mean([_loss(model, b, base.device).item() for b in held_out]))

    before = held_out_loss()  # B = 0 everywhere: the base model's loss, the same for every block
    ir = np.zeros(n)
    for block in range(n):
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in init:
                    p.copy_(init[name])
                    p.requires_grad_(False)
        params = _lora_params(model, block)
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
        for batch in train:
            opt.zero_grad(set_to_none=True)
            _loss(model, batch, base.device).backward()
            opt.step()
        ir[block] = before - held_out_loss()
        log.info("I_r block %d/%d: loss %.4f -> %.4f", block + 1, n, before, before - ir[block])
    return ir


# -- normalisation, correlations -------------------------------------------------------
def normalise(x: Any) -> np.ndarray:
    """Min-max to [0, 1]; a constant vector carries no ranking and maps to all 0.5."""
    x = np.asarray(x, dtype=float)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"cannot normalise non-finite sensitivities: {x.tolist()}")
    span = x.max() - x.min() if x.size else 0.0
    return np.full_like(x, 0.5) if span <= 0 else (x - x.min()) / span


def _topk(x: np.ndarray, k: int) -> set[int]:
    return set(np.argsort(-x, kind="stable")[:k].tolist())  # ties resolved by block index


def correlations(iq: Any, ir: Any, k: int | None = None) -> dict[str, Any]:
    """Pearson, Spearman (None where undefined, e.g. a constant vector) and top-k overlap of I_q and I_r."""
    from scipy import stats

    iq, ir = np.asarray(iq, dtype=float), np.asarray(ir, dtype=float)
    if iq.shape != ir.shape or iq.ndim != 1:
        raise ValueError(f"correlations need two vectors of equal length, got {iq.shape} and {ir.shape}")
    n = len(iq)
    k = max(1, n // 4) if k is None else int(k)
    if not 1 <= k <= n:
        raise ValueError(f"top-k overlap: k must be in 1..{n}, got {k}")
    defined = n >= 2 and np.ptp(iq) > 0 and np.ptp(ir) > 0
    pearson = float(stats.pearsonr(iq, ir)[0]) if defined else None
    spearman = float(stats.spearmanr(iq, ir)[0]) if defined else None
    return {"pearson": pearson, "spearman": spearman, "k": k,
            "topk_overlap": len(_topk(iq, k) & _topk(ir, k)) / k}


# -- the stage -------------------------------------------------------------------------
def run_sensitivity(model_dir: str | os.PathLike, data_dir: str | os.PathLike, cache_dir: str | os.PathLike,
                    settings: SensitivitySettings, quantizer: str, group_size: int,
                    device: str | None = None, hqq_axis: int = DEFAULT_HQQ_AXIS) -> tuple[list[dict], dict]:
    """Both priors for every block: ``(rows, summary)`` with correlations, timings and settings."""
    timings: dict[str, float] = {}

    def timed(part: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        timings[part] = timings.get(part, 0.0) + time.perf_counter() - t
        return out

    t0 = time.perf_counter()
    torch.manual_seed(settings.seed)
    base = timed("load", BaseModel, model_dir, device=device)
    cache = QuantCache(cache_dir, base.base_id)
    records = timed("load", load_split, data_dir, "train")
    calib = timed("calibration", calibration_ids, base.tokenizer, settings, records)
    iq = timed("fidelity", fidelity_sensitivity, base, cache, settings, quantizer, group_size, calib=calib,
               hqq_axis=hqq_axis)
    ir = timed("plasticity", plasticity, base, cache, base.tokenizer, records, settings)
    iq_n, ir_n = normalise(iq), normalise(ir)
    rows = [{"block": b, "iq_raw": float(iq[b]), "iq_norm": float(iq_n[b]), "ir_raw": float(ir[b]),
             "ir_norm": float(ir_n[b]), "combined": float((iq_n[b] + ir_n[b]) / 2)} for b in range(base.n_blocks)]
    timings["total"] = time.perf_counter() - t0
    summary = {"correlations": correlations(iq, ir), "timings": {k: round(v, 3) for k, v in timings.items()},
               "settings": {**asdict(settings), "low_bits": settings.resolved_low_bits, "quantizer": quantizer,
                            "group_size": group_size, "hqq_axis": hqq_axis},
               "n_calib_tokens": int(calib.numel()), "n_calib_sequences": int(calib.shape[0]),
               "base_id": base.base_id, "device": base.device,
               "quant_cache": {"hits": cache.hits, "misses": cache.misses}}
    return rows, summary


SENSITIVITY_FORMAT = 1  # bump when the stored result changes meaning


def cached_run_sensitivity(model_dir: str | os.PathLike, data_dir: str | os.PathLike, cache_dir: str | os.PathLike,
                           settings: SensitivitySettings, quantizer: str, group_size: int,
                           device: str | None = None, hqq_axis: int = DEFAULT_HQQ_AXIS) -> tuple[list[dict], dict]:
    """:func:`run_sensitivity` with its result kept under ``{cache_dir}/sensitivity/``, keyed by the
    base model's weight hashes, the training split, the calibration text and every setting, so
    that any workflow sharing ``cache_dir`` (a shared filesystem on a cluster) computes Stage 0
    once per (model, data, settings). ``summary['cached']`` says whether it came from there."""
    import hashlib
    import json

    from autoqra.evaluate import data_sha
    from autoqra.io import atomic_write_json
    from autoqra.quant.cache import base_sha

    calib = settings.calib_source
    key = {"format": SENSITIVITY_FORMAT, "settings": asdict(settings), "quantizer": quantizer,
           "group_size": group_size, "hqq_axis": hqq_axis,
           "data": data_sha(data_dir, ("train",)),
           "calib": None if calib == "data" else hashlib.sha256(Path(calib).read_bytes()).hexdigest()}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=list).encode()).hexdigest()[:16]
    base = base_sha(model_dir)
    path = Path(cache_dir) / "sensitivity" / base[:12] / f"{digest}.json"
    try:
        stored = json.loads(path.read_text())
        if stored.get("key") == json.loads(json.dumps(key, default=list)):
            return stored["rows"], {**stored["summary"], "cached": True}
    except (OSError, json.JSONDecodeError, AttributeError):
        pass  # absent or unreadable: compute it
    rows, summary = run_sensitivity(model_dir, data_dir, cache_dir, settings, quantizer, group_size, device, hqq_axis)
    atomic_write_json(path, {"key": key, "rows": rows, "summary": summary})
    return rows, {**summary, "cached": False}


def write_priors(rows: list[dict], tsv_path: str | os.PathLike) -> Path:
    """Write the priors table (one row per block, PRIOR_COLUMNS) atomically."""
    return atomic_write_tsv(tsv_path, PRIOR_COLUMNS, [[r[c] for c in PRIOR_COLUMNS] for r in rows])


def read_priors(tsv_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(imp_q, imp_r)``: the normalised priors in block order, validated; DatasetError names the file."""
    path = Path(tsv_path)
    if not path.is_file():
        raise DatasetError(f"{path}: priors file not found (run the sensitivity stage first)")
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        missing = [c for c in ("block", "iq_norm", "ir_norm") if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"{path}: missing column(s) {missing}; expected {list(PRIOR_COLUMNS)}")
        rows = list(reader)
    parsed = []
    for line, r in enumerate(rows, start=2):
        try:
            block, q, s = int(r["block"]), float(r["iq_norm"]), float(r["ir_norm"])
        except (TypeError, ValueError):
            raise DatasetError(f"{path}: line {line}: expected an integer block and numeric iq_norm/ir_norm, "
                               f"got {r['block']!r}, {r['iq_norm']!r}, {r['ir_norm']!r}") from None
        if not (math.isfinite(q) and math.isfinite(s) and 0.0 <= q <= 1.0 and 0.0 <= s <= 1.0):
            raise DatasetError(f"{path}: line {line}: iq_norm/ir_norm must be finite and in [0, 1], got {q}, {s}")
        parsed.append((block, q, s))
    blocks = sorted(b for b, _, _ in parsed)
    if not blocks or blocks != list(range(len(parsed))):
        raise DatasetError(f"{path}: expected one row per block 0..n-1, each once; got blocks {blocks}")
    parsed.sort()
    return np.array([q for _, q, _ in parsed]), np.array([s for _, _, s in parsed])
