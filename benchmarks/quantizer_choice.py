"""The quantizer map chosen from benchmarks/quantizer_bench.py's measurements, and its figure.

Rule: (1) the HQQ setting (axis, group size) with the best mean rank of damage over every
(rung, text) cell; (2) per rung, a bitsandbytes quantizer (NF4 at 4 bits, int8 at 8) takes the rung
when it is better at equal memory: its mean damage (over the two texts) lies below the chosen HQQ
setting's damage-vs-bits-per-weight curve (linear between its measured rungs) at its own bits per
weight; otherwise HQQ keeps the rung. The search works under a memory budget, so a rung is worth its
damage at its cost. Paired bootstrap 95 % CIs (over documents) of every alternative against the
chosen quantizer say which differences the measurement resolves.

    PYTHONPATH=src .venv/bin/python benchmarks/quantizer_choice.py benchmarks/results/quantizer_bench.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HQQ_BITS = (2, 3, 4, 8)
TEXTS = ("heldout", "validation")
RULE = __doc__.split("Rule: ")[1].split("\n\n")[0].replace("\n", " ")


def mean_damage(r: dict) -> float:
    return (r["damage_heldout"] + r["damage_validation"]) / 2


def paired_ci(a: np.ndarray, b: np.ndarray, tokens: np.ndarray, rng: np.random.Generator,
              n_boot: int = 2000) -> list[float]:
    """95 % bootstrap CI (over documents) of the per-token loss difference a - b."""
    idx = rng.integers(0, len(a), size=(n_boot, len(a)))
    diff = (a[idx].sum(1) - b[idx].sum(1)) / tokens[idx].sum(1)
    return [float(np.quantile(diff, 0.025)), float(np.quantile(diff, 0.975))]


def choose(result: dict, seed: int = 0) -> dict:
    """Apply the rule (module docstring) to a quantizer_bench result."""
    rng = np.random.default_rng(seed)
    ok = [r for r in result["rows"] if r["status"] == "ok"]
    per_doc = {t: {k: np.array(v) for k, v in d.items()} for t, d in result["doc_nll"].items()}
    tokens = {t: np.array(v) for t, v in result["doc_tokens"].items()}
    settings = sorted({(r["hqq_axis"], r["group_size"]) for r in ok if r["quantizer"] == "hqq"})
    ranks = {s: [] for s in settings}
    for b in HQQ_BITS:
        for t in TEXTS:
            cell = sorted((r[f"damage_{t}"], (r["hqq_axis"], r["group_size"])) for r in ok
                          if r["quantizer"] == "hqq" and r["bits"] == b)
            for i, (_, s) in enumerate(cell):
                ranks[s].append(i + 1)
    mean_rank = {s: float(np.mean(v)) for s, v in ranks.items()}
    axis, group = min(settings, key=lambda s: (mean_rank[s], s[1] != 64))
    hqq = {r["bits"]: r for r in ok if r["quantizer"] == "hqq" and (r["hqq_axis"], r["group_size"]) == (axis, group)}
    xs = [hqq[b]["bits_per_weight"] for b in HQQ_BITS]
    ys = [mean_damage(hqq[b]) for b in HQQ_BITS]
    rungs = {}
    for b in HQQ_BITS:
        bnb = [r for r in ok if r["bits"] == b and r["quantizer"] != "hqq"]
        below = [r for r in bnb if mean_damage(r) < float(np.interp(r["bits_per_weight"], xs, ys))]
        best = min(below, key=mean_damage) if below else hqq[b]
        alts = []  # every other quantizer measured at this rung
        for r in (r for r in ok if r["bits"] == b and r is not best):
            alts.append({"name": r["name"], "quantizer": r["quantizer"], "bits_per_weight": r["bits_per_weight"],
                         "mean_damage": mean_damage(r),
                         "hqq_curve_at_its_bits_per_weight": float(np.interp(r["bits_per_weight"], xs, ys)),
                         **{f"ci95_{t}_alt_minus_chosen": paired_ci(per_doc[t][r["key"]], per_doc[t][best["key"]],
                                                                    tokens[t], rng) for t in TEXTS}})
        rungs[str(b)] = {"quantizer": best["quantizer"], "name": best["name"], "mean_damage": mean_damage(best),
                         "damage_heldout": best["damage_heldout"], "damage_validation": best["damage_validation"],
                         "bits_per_weight": best["bits_per_weight"], "alternatives": alts}
    return {"hqq_axis": axis, "group_size": group,
            "hqq_mean_rank": {f"a{a}-g{g}": v for (a, g), v in mean_rank.items()},
            "map": {b: rungs[b]["quantizer"] for b in rungs}, "rungs": rungs,
            "rule": RULE}


def figure(result: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=False)
    rows = [r for r in result["rows"] if r["status"] == "ok"]
    for ax, t in zip(axes, TEXTS, strict=True):
        for name in dict.fromkeys(r["name"] for r in rows):
            pts = sorted((r["bits_per_weight"], r[f"damage_{t}"]) for r in rows if r["name"] == name)
            x, y = zip(*pts, strict=True)
            marker = {"nf4": "*", "int8": "D"}.get(name, "o")
            ax.plot(x, np.maximum(y, 1e-4), marker=marker, ms=9 if marker != "o" else 5, label=name,
                    ls="-" if len(x) > 1 else "none")
        ax.set_yscale("log")
        ax.set_xlabel("bits per weight (incl. quantization metadata)")
        ax.set_title(f"{t}: {result['tokens'][t]} tokens")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("loss increase over 16-bit (nats/token)")
    axes[1].legend(fontsize=7, ncol=2)
    c = result.get("choice")
    chosen = "" if not c else (f"\nchosen: HQQ axis {c['hqq_axis']}, group {c['group_size']}; map "
                               + ", ".join(f"{b}: {q}" for b, q in c["map"].items()))
    fig.suptitle(f"Quantization damage before fine-tuning, {result['model_name']} (all 7 projections of every "
                 f"block; values ≤ 1e-4 drawn at 1e-4){chosen}", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=130)
    fig.savefig(png.with_suffix(".pdf"))




def table_markdown(result: dict) -> str:
    """Damage per quantizer x rung (nats/token over 16-bit) with bits per weight, and the chosen map."""
    c = result["choice"]
    chosen = {(int(b), r["name"]) for b, r in c["rungs"].items()}
    lines = [f"Model {result['model_name']} ({result['weights_note']}); held-out: {result['heldout_source']}, "
             f"{result['tokens']['heldout']} tokens in {result['documents']['heldout']} chunks; validation: "
             f"{result['tokens']['validation']} response tokens in {result['documents']['validation']} examples. "
             f"16-bit loss: held-out {result['base_loss']['heldout']:.4f}, validation "
             f"{result['base_loss']['validation']:.4f} nats/token.", "",
             "| quantizer | bits | bits/weight (incl. metadata) | damage held-out | damage validation | chosen |",
             "| --- | ---: | ---: | ---: | ---: | :---: |"]
    for r in sorted((r for r in result["rows"] if r["status"] == "ok"), key=lambda r: (r["bits"], r["name"])):
        mark = "**yes**" if (r["bits"], r["name"]) in chosen else ""
        lines.append(f"| {r['name']} | {r['bits']} | {r['bits_per_weight']:.3f} | {r['damage_heldout']:+.4f} | "
                     f"{r['damage_validation']:+.4f} | {mark} |")
    lines += ["", f"Chosen: HQQ axis {c['hqq_axis']}, group {c['group_size']}; map "
              + ", ".join(f"{b}: {q}" for b, q in c["map"].items()) + ".", "", f"Rule: {c['rule']}", ""]
    return "\n".join(lines)


def write_outputs(result: dict, path: Path) -> None:
    """The figure (PNG + PDF) and the markdown table beside the JSON."""
    from autoqra.io import atomic_write_text

    figure(result, path.with_suffix(".png"))
    atomic_write_text(path.with_suffix(".md"), table_markdown(result))


def main(argv: list[str] | None = None) -> int:
    from autoqra.io import atomic_write_json

    path = Path((argv or sys.argv[1:])[0])
    result = json.loads(path.read_text())
    result["choice"] = choose(result)
    atomic_write_json(path, result)
    write_outputs(result, path)
    print(f"chosen: axis {result['choice']['hqq_axis']}, group {result['choice']['group_size']}, "
          f"map {result['choice']['map']} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
