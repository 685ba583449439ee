"""Quantization damage of every quantizer at every rung, before any fine-tuning (issue #16).

On a prepared base model (default: SmolLM2-135M-Instruct from the offline wheel), every block's
seven projections are quantized with one quantizer (embeddings, norms and lm_head stay dense, as in
a plan) and the next-token loss is compared with the 16-bit model on two texts:

- held-out English prose: CPython's own documentation topics (``pydoc_data.topics``, shipped with
  every Python), cut into fixed-length token chunks spread over the whole text (loss on every token);
- the validation split of the default synthetic instruction data (loss on response tokens, the
  search's own ``neg_loss`` score).

Quantizers: HQQ with ``axis`` 0 and 1 at 2/3/4/8 bits for each group size whose layout the model's
shapes allow, bitsandbytes NF4 (4 bits, double quantization) and LLM.int8 (8 bits). Bits per weight
include the quantization metadata (measured from the stored tensors, and the memory model's
prediction beside it). The JSON keeps every document's loss, so that ``quantizer_choice.py``
(the selection rule, paired bootstrap CIs over documents, the figure of damage vs bits per weight)
can be rerun from it without a model.

    PYTHONPATH=src nice -n 10 .venv/bin/python benchmarks/quantizer_bench.py \\
        --model /tmp/smollm2/hf --data /tmp/synth
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from autoqra.data import IGNORE_INDEX, collate, load_split
from autoqra.io import atomic_write_json
from autoqra.manifest import build_manifest
from autoqra.memory import MemoryModel, ModelShape
from autoqra.plan import PROJECTIONS, Plan, projection_module
from autoqra.quant import BaseModel, QuantCache
from autoqra.quant.backends import stored_bytes
from autoqra.quant.build import quantize_base
from autoqra.train import tokenize_records

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quantizer_choice import HQQ_BITS, TEXTS, choose, write_outputs  # noqa: E402


# -- the two texts ------------------------------------------------------------------------
def heldout_text() -> tuple[str, str]:
    """English prose of CPython's documentation topics, in a fixed (sorted) order; and its source."""
    import pydoc_data.topics as topics

    return "\n\n".join(topics.topics[k] for k in sorted(topics.topics)), f"pydoc_data.topics ({sys.version.split()[0]})"


def heldout_chunks(tokenizer, n_chunks: int, chunk_len: int) -> torch.Tensor:
    """``n_chunks`` token windows of ``chunk_len``, evenly spaced over the whole text."""
    ids = tokenizer(heldout_text()[0], add_special_tokens=False)["input_ids"]
    if len(ids) < n_chunks * chunk_len:
        raise ValueError(f"held-out text has {len(ids)} tokens, fewer than {n_chunks} x {chunk_len}")
    starts = np.linspace(0, len(ids) - chunk_len, n_chunks).astype(int)
    return torch.tensor([ids[s:s + chunk_len] for s in starts])


@torch.no_grad()
def heldout_nll(model, chunks: torch.Tensor, batch: int) -> np.ndarray:
    """Summed next-token NLL per chunk (every token after the first is predicted)."""
    out = []
    for i in range(0, len(chunks), batch):
        ids = chunks[i:i + batch]
        logits = model(input_ids=ids, use_cache=False).logits.float()
        ce = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
        out += ce.sum(1).tolist()
    return np.array(out)


@torch.no_grad()
def response_nll(model, examples: list[dict], batch: int, pad_id: int) -> np.ndarray:
    """Summed next-token NLL on response tokens per validation example."""
    out = []
    for i in range(0, len(examples), batch):
        b = collate(examples[i:i + batch], pad_id)
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], use_cache=False).logits.float()
        ce = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), b["labels"][:, 1:],
                                               ignore_index=IGNORE_INDEX, reduction="none")
        out += ce.sum(1).tolist()
    return np.array(out)


# -- quantizers ---------------------------------------------------------------------------
def variants(groups: list[int]) -> list[dict]:
    out = [{"name": f"hqq-a{a}-g{g}", "quantizer": "hqq", "bits": b, "group_size": g, "hqq_axis": a}
           for a in (0, 1) for g in groups for b in HQQ_BITS]
    out.append({"name": "nf4", "quantizer": "nf4", "bits": 4, "group_size": groups[0], "hqq_axis": 0})
    out.append({"name": "int8", "quantizer": "int8", "bits": 8, "group_size": groups[0], "hqq_axis": 0})
    return out


def measured_bytes(model, n_blocks: int) -> dict[str, int]:
    tot = {"weights": 0, "quant_meta": 0, "params": 0}
    for block in range(n_blocks):
        for proj in PROJECTIONS:
            layer = model.get_submodule(projection_module(block, proj))
            sb = stored_bytes(layer)
            tot["weights"] += int(sb["weights"])
            tot["quant_meta"] += int(sb["quant_meta"])
    return tot


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="prepared base model dir (rule model_prepare)")
    ap.add_argument("--data", required=True, help="prepared data dir (rule data_prepare)")
    ap.add_argument("--cache-dir", default=None, help="quantization cache (default: a dir beside --model)")
    ap.add_argument("--groups", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--chunks", type=int, default=48, help="held-out chunks")
    ap.add_argument("--chunk-len", type=int, default=256)
    ap.add_argument("--val-examples", type=int, default=300)
    ap.add_argument("--max-seq-len", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/quantizer_bench.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()

    base = BaseModel(args.model, device="cpu", keep_dense=True)
    shape = ModelShape.from_path(args.model)
    cache = QuantCache.for_base(args.cache_dir or Path(args.model).parent / "cache", base)
    tok = base.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    chunks = heldout_chunks(tok, args.chunks, args.chunk_len)
    val = tokenize_records(tok, load_split(args.data, "validation")[:args.val_examples], args.max_seq_len)
    val.sort(key=lambda e: len(e["input_ids"]))  # little padding per batch
    tokens = {"heldout": np.full(len(chunks), args.chunk_len - 1),
              "validation": np.array([sum(x != IGNORE_INDEX for x in e["labels"][1:]) for e in val])}

    def losses(model) -> dict[str, np.ndarray]:
        return {"heldout": heldout_nll(model, chunks, args.batch), "validation": response_nll(model, val, 16, pad)}

    t = time.perf_counter()
    ref = losses(base.model)
    base_loss = {k: float(v.sum() / tokens[k].sum()) for k, v in ref.items()}
    print(f"16-bit: held-out {base_loss['heldout']:.4f}, validation {base_loss['validation']:.4f} nats/token "
          f"({time.perf_counter() - t:.0f} s)", flush=True)
    rows, per_doc = [], {t: {} for t in TEXTS}
    for v in variants(args.groups):
        key = f"{v['name']}-b{v['bits']}"
        row = {**v, "key": key}
        mm = MemoryModel(shape, {v["bits"]: v["quantizer"]}, v["group_size"], v["hqq_axis"])
        errors = mm.layout_errors([v["bits"]])
        if errors:
            rows.append({**row, "status": "skipped", "reason": "; ".join(errors)})
            print(f"{key}: skipped ({errors[0]})", flush=True)
            continue
        plan = Plan.uniform(shape.n_blocks, v["bits"], 1, v["quantizer"], v["group_size"], v["hqq_axis"])
        t = time.perf_counter()
        model = quantize_base(base, plan, cache)
        t_q = time.perf_counter() - t
        got = measured_bytes(model, shape.n_blocks)
        cost = mm.block_cost(v["bits"], 1, v["quantizer"])
        predicted = shape.n_blocks * (cost["weights"] + cost["quant_meta"])
        n_params = shape.n_blocks * shape.block_weight_params
        t = time.perf_counter()
        nll = losses(model)
        del model
        for k in TEXTS:
            per_doc[k][key] = nll[k]
        loss = {k: float(nll[k].sum() / tokens[k].sum()) for k in TEXTS}
        stored = got["weights"] + got["quant_meta"]
        row.update({"status": "ok", "loss_heldout": loss["heldout"], "loss_validation": loss["validation"],
                    "damage_heldout": loss["heldout"] - base_loss["heldout"],
                    "damage_validation": loss["validation"] - base_loss["validation"],
                    "stored_bytes": stored, "stored_weight_bytes": got["weights"],
                    "stored_meta_bytes": got["quant_meta"], "predicted_bytes": predicted,
                    "memory_model_rel_error": predicted / stored - 1, "bits_per_weight": 8 * stored / n_params,
                    "quantize_or_load_seconds": t_q, "eval_seconds": time.perf_counter() - t})
        rows.append(row)
        print(f"{key:>16}: {row['bits_per_weight']:.3f} bpw, damage held-out {row['damage_heldout']:+.4f}, "
              f"validation {row['damage_validation']:+.4f} (memory model {100 * row['memory_model_rel_error']:+.3f} %, "
              f"{row['eval_seconds']:.0f} s)", flush=True)
    cfg = {k: v for k, v in vars(args).items() if k != "out"}
    result = {"model": str(args.model), "model_name": Path(args.model).parent.name,
              "weights_note": json.loads((Path(args.model) / "manifest.json").read_text()).get("weights_note", ""),
              "heldout_source": heldout_text()[1],
              "tokens": {k: int(v.sum()) for k, v in tokens.items()},
              "documents": {k: len(v) for k, v in tokens.items()}, "base_loss": base_loss, "rows": rows,
              # per-document summed NLL (and tokens), so that the choice and its CIs can be redone from the JSON
              "doc_tokens": {k: v.tolist() for k, v in tokens.items()},
              "doc_nll": {t: {k: [round(float(x), 5) for x in v] for k, v in d.items()} for t, d in per_doc.items()},
              "base_doc_nll": {t: [round(float(x), 5) for x in v] for t, v in ref.items()}}
    result["choice"] = choose(result)
    result["seconds"] = time.perf_counter() - t_start
    result["manifest"] = build_manifest("benchmark_quantizers", cfg)
    out = Path(args.out)
    atomic_write_json(out, result)
    write_outputs(result, out)
    print(f"chosen: axis {result['choice']['hqq_axis']}, group {result['choice']['group_size']}, "
          f"map {result['choice']['map']} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
