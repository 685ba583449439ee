"""Less seed noise at the source (issue #23): does a fine-tuning setting lower a method's spread over
seeds without lowering its mean? Compares two sets of runs of one plan on the same seeds and the same
test documents (their lm-eval per-document rows), e.g. the study's QLoRA NF4 r8 at the default
setting against a pipeline run of the same plan with ``finetune: {steps: 60, lr: 5.0e-4}``:

    PYTHONPATH=src python benchmarks/seed_noise.py \
        --reference benchmarks/results/study/b4/results/summary/docs.tsv.gz:qlora_nf4:"30 steps, lr 1e-3" \
        --candidate /tmp/seednoise/A:qlora_nf4:"60 steps, lr 5e-4" --out benchmarks/results/seed_noise_cpu.json

Reports per setting the task average per seed, its mean with the study's 95 % interval (documents
and seeds, autoqra.report.uncertainty; in points) and its seed sd; the paired Δ of the means; and the ratio of
the seed variances with a 95 % interval for paired samples (Pitman-Morgan: the variance ratio λ is
where X/√λ + Y and X/√λ − Y are uncorrelated; the interval is every λ a t-test on that correlation,
n − 2 degrees of freedom, does not reject). A setting "halves the seed sd" when the whole interval of
the sd ratio lies at or below 0.5 -- with 5 seeds an interval that narrow needs a large effect.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from autoqra.report.uncertainty import (
    AVERAGE,
    DOC_COLUMNS,
    bootstrap_model,
    main_metrics,
    task_data,
)
from autoqra.taskmetrics import lower_is_better


def load_docs(spec: str) -> tuple[pd.DataFrame, str]:
    """``PATH:METHOD:LABEL``: PATH a docs.tsv(.gz) or a run directory (its results/lm_eval/*/METHOD/*.docs.tsv);
    the method's rows, renamed to LABEL."""
    path, method, label = spec.split(":", 2)
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob(f"results/lm_eval/*/{method}/s*.docs.tsv"))
        if not files:
            raise SystemExit(f"{spec}: no results/lm_eval/*/{method}/s*.docs.tsv under {p}")
        # a run's per-document files carry task/doc_id/metric/value: method and seed from the path
        docs = pd.concat([pd.read_csv(f, sep="\t").assign(method=method, seed=int(f.name.split(".")[0][1:]))
                          for f in files], ignore_index=True)
    else:
        docs = pd.read_csv(p, sep="\t")
    docs = docs[docs["method"] == method].copy()
    if docs.empty:
        raise SystemExit(f"{spec}: no rows of method {method!r}")
    docs["method"] = label
    return docs, label


def per_seed_average(docs: pd.DataFrame) -> dict[int, float]:
    """The task average (higher-is-better tasks' main metrics, in points) of each seed."""
    mains = main_metrics(docs)
    tasks = [t for t, m in mains.items() if not lower_is_better(m)]
    out: dict[int, list[float]] = {}
    for task in tasks:
        sub = docs[docs["task"] == task]
        td = task_data(sub, mains[task], sorted(set(sub["doc_id"])))
        for i, s in enumerate(td.seeds):
            out.setdefault(int(s), []).append(100.0 * float(td.num[i].sum() / td.den[i].sum()))
    return {s: float(np.mean(v)) for s, v in out.items() if len(v) == len(tasks)}


def variance_ratio_ci(x: np.ndarray, y: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """var(x)/var(y) and its paired (Pitman-Morgan) interval, by a scan over λ on a log grid."""
    n = len(x)
    ratio = float(np.var(x, ddof=1) / np.var(y, ddof=1))
    crit = stats.t.ppf(0.5 + level / 2, n - 2)
    grid = ratio * np.exp(np.linspace(np.log(1e-3), np.log(1e3), 20001))
    keep = []
    for lam in grid:
        u, v = x / np.sqrt(lam) + y, x / np.sqrt(lam) - y
        r = np.corrcoef(u, v)[0, 1]
        t = r * np.sqrt((n - 2) / max(1e-300, 1 - r * r))
        keep.append(abs(t) <= crit)
    inside = grid[np.array(keep)]
    return ratio, float(inside.min()), float(inside.max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", required=True, help="PATH:METHOD:LABEL (docs.tsv(.gz) or a run directory)")
    ap.add_argument("--candidate", required=True, action="append", help="PATH:METHOD:LABEL, repeatable")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    from autoqra.io import atomic_write_json
    from autoqra.manifest import build_manifest

    ref, ref_label = load_docs(args.reference)
    cands = [load_docs(c) for c in args.candidate]
    docs = pd.concat([ref, *(d for d, _ in cands)], ignore_index=True)[DOC_COLUMNS]
    docs["model"] = "m"
    table = bootstrap_model(docs, ref_label)
    avg = table[table["task"] == AVERAGE].set_index("method")
    per = {lab: per_seed_average(docs[docs["method"] == lab]) for lab in [ref_label, *(lab for _, lab in cands)]}
    out = {"reference": args.reference, "candidates": args.candidate, "settings": {}}
    for lab, seeds in per.items():
        row = avg.loc[lab]
        out["settings"][lab] = {"per_seed_average": seeds, "seed_sd": float(np.std(list(seeds.values()), ddof=1)),
                                "mean": 100 * float(row["mean"]),
                                "ci": [100 * float(row["ci_lo"]), 100 * float(row["ci_hi"])],
                                "delta_vs_reference": None if lab == ref_label else
                                [100 * float(row[k]) for k in ("delta", "delta_lo", "delta_hi")],
                                "pairing": row["pairing"]}
        if lab != ref_label:
            common = sorted(set(seeds) & set(per[ref_label]))
            x = np.array([seeds[s] for s in common])
            y = np.array([per[ref_label][s] for s in common])
            ratio, lo, hi = variance_ratio_ci(x, y)
            out["settings"][lab]["seed_sd_ratio_vs_reference"] = {
                "ratio": float(np.sqrt(ratio)), "ci": [float(np.sqrt(lo)), float(np.sqrt(hi))], "seeds": common,
                "halves_sd": bool(np.sqrt(hi) <= 0.5), "keeps_mean": bool(row["delta_hi"] >= 0)}
    out["manifest"] = build_manifest(stage="seed_noise", config={k: str(v) for k, v in vars(args).items()})
    atomic_write_json(args.out, out)
    for lab, s in out["settings"].items():
        extra = s.get("seed_sd_ratio_vs_reference")
        print(f"{lab:<28} mean {s['mean']:.1f} [{s['ci'][0]:.1f}, {s['ci'][1]:.1f}]  seed sd {s['seed_sd']:.2f}"
              + (f"  Δ {s['delta_vs_reference'][0]:+.1f} [{s['delta_vs_reference'][1]:+.1f}, "
                 f"{s['delta_vs_reference'][2]:+.1f}]  sd ratio {extra['ratio']:.2f} [{extra['ci'][0]:.2f}, "
                 f"{extra['ci'][1]:.2f}]" if extra else ""))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
