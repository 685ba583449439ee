"""The bit ladder at equal memory (issues #16, #22): quantization damage of every configuration
(rung × quantizer × group size × metadata precision) against the bits per weight it really stores.

On a prepared base model (default: SmolLM2-135M-Instruct from the offline wheel) every block's seven
projections are quantized with one configuration (embeddings, norms and lm_head stay dense, as in a
plan) and the next-token loss is compared with the 16-bit model on two texts:

- the held-out general English text of the prepared data (``general_heldout.jsonl``: CPython
  documentation prose, the benchmark part the search never sees), every token scored;
- the validation split of the prepared instruction data (response tokens: the search's own score).

Configurations: HQQ codes packed exactly (``hqq``: 2/3/4/8 bits, group 32/64/128, scale and zero in
16 or 8 bits: ``meta_bits``), HQQ 0.2.8's own layout (``hqq028``, what the ladder stored before #22;
3-bit padded), bitsandbytes NF4 (4 bits) and LLM.int8 (8 bits). Bits per weight include the metadata
and are counted from the stored tensors of all projections, with the memory model's prediction
beside them (``memory_model_bytes_off`` must be 0).

Weight-only quantizers (HQQ, NF4) are scored through their dequantized weights in a dense copy of
the model: their layers compute ``x @ dequantize(W).T`` so this is the same function, and one
configuration per run is checked against its real layers (``eval_path_check``). int8 quantizes the
activations too, so it runs through its real layers. HQQ configurations whose dequantized weights
are bit-identical to an already measured one (packed vs HQQ 0.2.8 layout at 16-bit metadata) take
its losses (``damage_from``). The JSON keeps every document's loss, so ``quantizer_choice.py`` (the
Pareto front, the rule, CIs, figure and table) reruns without a model. ``--resume`` keeps the rows
of an existing JSON measured with the same texts.

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/quantizer_bench.py \\
        --model results/models/smollm2-135m/hf --data results/data/synth --cache-dir /tmp/qbench-cache
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from autoqra.data import IGNORE_INDEX, collate, load_split
from autoqra.general_loss import tokenize_texts
from autoqra.io import atomic_write_json
from autoqra.manifest import build_manifest
from autoqra.memory import ModelShape
from autoqra.quant import BaseModel, QuantCache
from autoqra.train import response_loss_sum, tokenize_records

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quantizer_choice import TEXTS, choose  # noqa: E402
from quantizer_configs import configurations, quantized_projections, real_model  # noqa: E402
from quantizer_report import write_outputs  # noqa: E402


def read_texts(data_dir: str, tok, val_examples: int, max_seq_len: int, general_max_len: int) -> dict[str, list]:
    """Tokenized documents of the two texts (sorted by length: little padding per batch)."""
    gpath = Path(data_dir) / "general_heldout.jsonl"
    if not gpath.is_file():
        raise FileNotFoundError(f"{gpath}: the held-out general text is missing; prepare the data with rule "
                                "data_prepare (data.general_text in the config)")
    general = [json.loads(line)["text"] for line in gpath.read_text().splitlines() if line.strip()]
    val = load_split(data_dir, "validation")[:val_examples]
    docs = {"heldout": tokenize_texts(tok, general, general_max_len),
            "validation": tokenize_records(tok, val, max_seq_len)}
    return {k: sorted(v, key=lambda e: len(e["input_ids"])) for k, v in docs.items()}


@torch.no_grad()
def doc_nll(model, docs: list[dict], pad_id: int, batch: int) -> np.ndarray:
    """Summed next-token NLL over the supervised tokens of each document."""
    out = []
    for i in range(0, len(docs), batch):
        _, per_seq = response_loss_sum(model, collate(docs[i:i + batch], pad_id))
        out += per_seq.tolist()
    return np.array(out)


def doc_tokens(docs: list[dict]) -> np.ndarray:
    return np.array([sum(x != IGNORE_INDEX for x in d["labels"][1:]) for d in docs])


def load_dense(work, weights: dict[str, torch.Tensor]) -> None:
    """Copy dequantized projection weights into the dense work model."""
    with torch.no_grad():
        for path, w in weights.items():
            work.get_submodule(path).weight.copy_(w.to(work.get_submodule(path).weight.dtype))


@torch.no_grad()
def logits_gap(a, b, docs: list[dict], pad_id: int) -> float:
    """Max |logit difference| of two models on one batch (the eval-path check)."""
    batch = collate(docs[-4:], pad_id)
    la = a(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    lb = b(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    return float((la - lb).abs().max())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="prepared base model dir (rule model_prepare)")
    ap.add_argument("--data", required=True, help="prepared data dir (rule data_prepare)")
    ap.add_argument("--cache-dir", required=True, help="quantization cache dir (written)")
    ap.add_argument("--groups", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--meta-bits", type=int, nargs="+", default=[16, 8])
    ap.add_argument("--only", nargs="*", default=None, help="measure only these configuration keys")
    ap.add_argument("--val-examples", type=int, default=300)
    ap.add_argument("--max-seq-len", type=int, default=64)
    ap.add_argument("--general-max-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--resume", action="store_true", help="keep rows of --out measured on the same texts")
    ap.add_argument("--merge", nargs="*", default=[], help="also keep the rows of these (partial) result JSONs "
                    "measured on the same texts (runs split over processes)")
    ap.add_argument("--out", default="benchmarks/results/quantizer_bench.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    out = Path(args.out)

    base = BaseModel(args.model, device="cpu")
    shape = ModelShape.from_path(args.model)
    cache = QuantCache(args.cache_dir, base.base_id)
    tok = base.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    docs = read_texts(args.data, tok, args.val_examples, args.max_seq_len, args.general_max_len)
    tokens = {t: doc_tokens(docs[t]) for t in TEXTS}
    text_id = {t: int(tokens[t].sum()) for t in TEXTS} | {"n_docs": {t: len(docs[t]) for t in TEXTS}}
    old = json.loads(out.read_text()) if args.resume and out.is_file() else None
    if old is not None and old.get("text_id") != text_id:
        print(f"--resume: {out} was measured on other texts ({old.get('text_id')}); measuring afresh", flush=True)
        old = None
    for path in args.merge:
        if not Path(path).is_file():
            print(f"--merge {path}: not there (yet); skipped", flush=True)
            continue
        other = json.loads(Path(path).read_text())
        if other.get("text_id") != text_id:
            raise ValueError(f"--merge {path}: measured on other texts ({other.get('text_id')}, here {text_id})")
        old = old or {**other, "rows": [], "doc_nll": {t: {} for t in TEXTS}, "seconds": 0.0}
        have = {r["key"] for r in old["rows"]}
        old["rows"] += [r for r in other["rows"] if r["key"] not in have]
        for t in TEXTS:
            old["doc_nll"][t] = {**other["doc_nll"][t], **old["doc_nll"][t]}
        checks = other.get("eval_path_check") or {}
        old["eval_path_check"] = {**({checks["key"].split("-")[0]: checks} if "key" in checks else checks),
                                  **(old.get("eval_path_check") or {})}

    def losses(model) -> dict[str, np.ndarray]:
        return {t: doc_nll(model, docs[t], pad, args.batch if t == "heldout" else 16) for t in TEXTS}

    t = time.perf_counter()
    ref = {t: np.array(v) for t, v in old["base_doc_nll"].items()} if old else losses(base.model)
    base_loss = {k: float(v.sum() / tokens[k].sum()) for k, v in ref.items()}
    print(f"16-bit: held-out {base_loss['heldout']:.4f}, validation {base_loss['validation']:.4f} nats/token "
          f"({time.perf_counter() - t:.0f} s)", flush=True)
    work = copy.deepcopy(base.model)
    n_params = shape.n_blocks * shape.block_weight_params
    done = {r["key"]: r for r in (old or {}).get("rows", []) if r["status"] == "ok"}
    per_doc = {t: {k: np.array(v) for k, v in (old or {}).get("doc_nll", {}).get(t, {}).items()} for t in TEXTS}
    recon: dict[str, str] = {}  # fingerprint of the dequantized weights -> key measured with them
    eval_check = dict((old or {}).get("eval_path_check") or {})  # quantizer -> real layers vs dequantized
    if "key" in eval_check:  # written before the check was per quantizer
        eval_check = {eval_check["key"].split("-")[0]: eval_check}
    rows = []
    for cfg in configurations(args.groups, args.meta_bits):
        key = cfg["key"]
        if key in done:
            rows.append(done[key])
            if done[key].get("fingerprint"):
                recon.setdefault(done[key]["fingerprint"], key)
            continue
        if args.only is not None and key not in args.only:
            continue
        t = time.perf_counter()
        q = quantized_projections(base, shape, cfg, cache)
        if q.get("skip"):
            rows.append({**cfg, "status": "skipped", "reason": q["skip"]})
            print(f"{key}: skipped ({q['skip']})", flush=True)
            continue
        t_q = time.perf_counter() - t
        stored = q["weights"] + q["quant_meta"]
        row = {**cfg, "status": "ok", "stored_bytes": stored, "stored_weight_bytes": q["weights"],
               "stored_meta_bytes": q["quant_meta"], "bits_per_weight": 8 * stored / n_params,
               "memory_model_bytes": q["predicted"],
               "memory_model_bytes_off": None if q["predicted"] is None else q["predicted"] - stored,
               "fingerprint": q.get("fingerprint"), "quantize_or_load_seconds": t_q}
        t = time.perf_counter()
        source = recon.get(q.get("fingerprint"))
        if source is None and q.get("fingerprint") and args.merge:  # a process beside may have measured its twin
            for path in (p for p in args.merge if Path(p).is_file()):
                other = json.loads(Path(path).read_text())
                hit = next((r for r in other["rows"] if r.get("fingerprint") == q["fingerprint"]), None)
                if hit is not None and other.get("text_id") == text_id:
                    for tt in TEXTS:
                        per_doc[tt][hit["key"]] = np.array(other["doc_nll"][tt][hit["key"]])
                    source = recon[q["fingerprint"]] = hit["key"]
                    break
        if source is not None:  # same dequantized weights: same function, same losses
            nll = {tt: per_doc[tt][source] for tt in TEXTS}
            row["damage_from"] = source
        else:
            if q.get("dense") is not None:
                load_dense(work, q["dense"])
                model = work
            else:
                model = q["model"]
            nll = losses(model)
            if cfg["quantizer"] not in eval_check and q.get("dense") is not None:
                real = real_model(base, shape, cfg, cache)
                eval_check[cfg["quantizer"]] = {"key": key, "max_abs_logit_diff_real_vs_dequantized": logits_gap(
                    real, work, docs["heldout"], pad)}
                del real
            if q.get("fingerprint"):
                recon[q["fingerprint"]] = key
        for tt in TEXTS:
            per_doc[tt][key] = nll[tt]
        loss = {tt: float(nll[tt].sum() / tokens[tt].sum()) for tt in TEXTS}
        row.update({"loss_heldout": loss["heldout"], "loss_validation": loss["validation"],
                    "damage_heldout": loss["heldout"] - base_loss["heldout"],
                    "damage_validation": loss["validation"] - base_loss["validation"],
                    "eval_seconds": time.perf_counter() - t})
        rows.append(row)
        del q
        off = row["memory_model_bytes_off"]
        print(f"{key:>18}: {row['bits_per_weight']:.4f} bpw (memory model {'-' if off is None else off:+} B), "
              f"damage held-out {row['damage_heldout']:+.4f}, validation {row['damage_validation']:+.4f} "
              f"({row['eval_seconds']:.0f} s{', = ' + source if source else ''})", flush=True)
        partial = {"rows": rows, "doc_nll": per_doc, "base_doc_nll": ref, "text_id": text_id}
        atomic_write_json(out.with_suffix(".partial.json"), json.loads(json.dumps(partial, default=_jsonable)))
    cfg_args = {k: v for k, v in vars(args).items() if k not in ("out", "resume", "only")}
    result = {"model": str(args.model), "model_name": Path(args.model).parent.name,
              "weights_note": json.loads((Path(args.model) / "manifest.json").read_text()).get("weights_note", ""),
              "heldout_source": f"{args.data}/general_heldout.jsonl (CPython documentation prose, held-out part)",
              "text_id": text_id, "tokens": {k: int(v.sum()) for k, v in tokens.items()},
              "documents": {k: len(v) for k, v in tokens.items()}, "base_loss": base_loss,
              "n_quantized_params": n_params, "eval_path_check": eval_check, "rows": rows,
              "doc_tokens": {k: v.tolist() for k, v in tokens.items()},
              "doc_nll": {tt: {k: [round(float(x), 5) for x in v] for k, v in d.items()} for tt, d in per_doc.items()},
              "base_doc_nll": {tt: [round(float(x), 5) for x in v] for tt, v in ref.items()}}
    try:
        result["choice"] = choose(result)
    except ValueError as e:  # a partial run (split over processes): no complete ladder yet
        print(f"no choice: {e}", flush=True)
        result["choice"] = None
    result["seconds"] = time.perf_counter() - t_start + (old or {}).get("seconds", 0.0)
    result["manifest"] = build_manifest("benchmark_quantizers", cfg_args)
    atomic_write_json(out, result)
    out.with_suffix(".partial.json").unlink(missing_ok=True)
    write_outputs(result, out)
    print(f"chosen ladder: {(result['choice'] or {}).get('ladder')} -> {out}")
    return 0


def _jsonable(x):
    return x.tolist() if isinstance(x, np.ndarray) else str(x)


if __name__ == "__main__":
    sys.exit(main())
