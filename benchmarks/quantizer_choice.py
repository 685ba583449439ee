"""The bit ladder chosen at equal memory from benchmarks/quantizer_bench.py's measurements.

Rule: every configuration the pipeline can store (packed HQQ at each group size and metadata precision,
NF4 at 4 bits, int8 at 8; HQQ 0.2.8's padded layout is shown for reference only) is a point (cost =
stored bits per weight including metadata, damage = mean over the held-out and validation texts of the
loss increase over the 16-bit model, nats/token). The Pareto front is the set of points that no other
point beats on both. A ladder is one HQQ setting (group size and metadata bits: a plan carries one of
each) plus NF4 or HQQ at 4 bits and int8 or HQQ at 8. The search mixes rungs over blocks under a
memory budget, so a ladder is worth the damage of the best mix of its rungs at each budget: its lower
convex envelope of (cost, damage) (an additive per-block damage model with equal block sensitivities).
Two ladders are compared by their mean envelope damage over the budgets both can reach up to 4.0 bits
per weight (below 4 bits: where mixed precision pays on this model); the chosen ladder wins the most
of these head-to-head comparisons, ties broken by the mean over 2.5 to 4.0 and then over 4.0 to 8.0.
Each rung's default is that ladder's point, and whether it lies on the front is recorded. Paired bootstrap 95 % CIs (over documents) of every alternative at a rung against the chosen
point say which differences the measurement resolves.

    PYTHONPATH=src .venv/bin/python benchmarks/quantizer_choice.py benchmarks/results/quantizer_bench.json
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import numpy as np

TEXTS = ("heldout", "validation")
RUNGS = (2, 3, 4, 8)
RULE = __doc__.split("\n\n")[1].replace("Rule: ", "").replace("\n", " ")
LOW_RANGE, HIGH_RANGE = (2.5, 4.0), (4.0, 8.0)


def mean_damage(r: dict) -> float:
    return (r["damage_heldout"] + r["damage_validation"]) / 2


def paired_ci(a: np.ndarray, b: np.ndarray, tokens: np.ndarray, rng: np.random.Generator,
              n_boot: int = 2000) -> list[float]:
    """95 % bootstrap CI (over documents) of the per-token loss difference a - b."""
    idx = rng.integers(0, len(a), size=(n_boot, len(a)))
    diff = (a[idx].sum(1) - b[idx].sum(1)) / tokens[idx].sum(1)
    return [float(np.quantile(diff, 0.025)), float(np.quantile(diff, 0.975))]


def pareto_front(points: list[dict]) -> list[dict]:
    """Points no other point beats on both cost and damage (sorted by cost)."""
    def beaten(p):
        return any(q["bits_per_weight"] <= p["bits_per_weight"] and mean_damage(q) <= mean_damage(p)
                   and (q["bits_per_weight"], mean_damage(q)) != (p["bits_per_weight"], mean_damage(p)) for q in points)
    return sorted((p for p in points if not beaten(p)), key=lambda p: p["bits_per_weight"])


def lower_envelope(xy: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Vertices of the lower convex hull of points, by increasing x (Andrew's monotone chain);
    points beaten by a cheaper one are dropped first (damage may only fall as cost grows)."""
    hull: list[tuple[float, float]] = []
    for p in sorted(xy):
        if hull and p[1] >= hull[-1][1]:
            continue
        while len(hull) >= 2 and ((hull[-1][0] - hull[-2][0]) * (p[1] - hull[-2][1])
                                  - (hull[-1][1] - hull[-2][1]) * (p[0] - hull[-2][0])) <= 0:
            hull.pop()
        hull.append(p)
    return hull


def envelope_mean(hull: list[tuple[float, float]], lo: float, hi: float) -> float:
    """Mean of the envelope over [lo, hi] (inf when the ladder cannot reach ``lo``)."""
    xs, ys = zip(*hull, strict=True)
    if xs[0] > lo + 1e-9:
        return float("inf")
    grid = np.linspace(lo, hi, 301)
    return float(np.mean(np.interp(grid, xs, ys)))


def head_to_head(a: dict, b: dict) -> float:
    """Mean envelope damage of ladder ``a`` over the budgets both ``a`` and ``b`` reach, up to 4.0."""
    lo = max(a["envelope"][0][0], b["envelope"][0][0])
    return envelope_mean(a["envelope"], lo, max(lo, LOW_RANGE[1]))


def ladders(cands: list[dict]) -> list[dict]:
    """Every ladder: one HQQ (group, meta bits) for all HQQ rungs, NF4 or HQQ at 4, int8 or HQQ at 8."""
    by = {(r["quantizer"], r["bits"], r["group_size"], r["meta_bits"]): r for r in cands}
    out = []
    for g, m in sorted({(r["group_size"], r["meta_bits"]) for r in cands if r["quantizer"] == "hqq"}):
        hqq = {b: by.get(("hqq", b, g, m)) for b in RUNGS}
        nf4 = [r for r in cands if r["quantizer"] == "nf4"]
        int8 = [r for r in cands if r["quantizer"] == "int8"]
        for q4, q8 in itertools.product([hqq[4], *nf4], [hqq[8], *int8]):
            rungs = {2: hqq[2], 3: hqq[3], 4: q4, 8: q8}
            if any(v is None for v in rungs.values()):
                continue
            hull = lower_envelope([(r["bits_per_weight"], mean_damage(r)) for r in rungs.values()])
            out.append({"group_size": g, "meta_bits": m, "rungs": rungs, "envelope": hull,
                        "score_low": envelope_mean(hull, *LOW_RANGE), "score_high": envelope_mean(hull, *HIGH_RANGE)})
    return out


def choose(result: dict, seed: int = 0) -> dict:
    """Apply the rule (module docstring) to a quantizer_bench result."""
    rng = np.random.default_rng(seed)
    ok = [r for r in result["rows"] if r["status"] == "ok"]
    cands = [r for r in ok if r["quantizer"] != "hqq028"]
    front = pareto_front(cands)
    on_front = {r["key"] for r in front}
    all_ladders = ladders(cands)
    for a in all_ladders:
        a["wins"] = sum(head_to_head(a, b) < head_to_head(b, a) for b in all_ladders if b is not a)
    all_ladders.sort(key=lambda lad: (-lad["wins"], lad["score_low"], lad["score_high"]))
    if not all_ladders:
        raise ValueError("no complete ladder measured (every rung needs a packed-HQQ row of one group/meta setting)")
    best = all_ladders[0]
    per_doc = {t: {k: np.array(v) for k, v in d.items()} for t, d in result["doc_nll"].items()}
    tokens = {t: np.array(v) for t, v in result["doc_tokens"].items()}
    rungs = {}
    for b, chosen in best["rungs"].items():
        alts = []
        for r in (r for r in ok if r["bits"] == b and r["key"] != chosen["key"]):
            alts.append({"key": r["key"], "bits_per_weight": r["bits_per_weight"], "mean_damage": mean_damage(r),
                         **{f"ci95_{t}_alt_minus_chosen": paired_ci(per_doc[t][r["key"]], per_doc[t][chosen["key"]],
                                                                    tokens[t], rng) for t in TEXTS}})
        rungs[str(b)] = {"key": chosen["key"], "quantizer": chosen["quantizer"], "group_size": chosen["group_size"],
                         "meta_bits": chosen["meta_bits"], "bits_per_weight": chosen["bits_per_weight"],
                         "damage_heldout": chosen["damage_heldout"], "damage_validation": chosen["damage_validation"],
                         "mean_damage": mean_damage(chosen), "on_front": chosen["key"] in on_front,
                         "alternatives": alts}
    g, m = best["group_size"], best["meta_bits"]
    return {"ladder": f"HQQ group {g}, {m}-bit metadata; map " + ", ".join(
                f"{b}: {r['quantizer']}" for b, r in rungs.items()),
            "group_size": g, "meta_bits": m, "hqq_axis": 0, "map": {b: r["quantizer"] for b, r in rungs.items()},
            "rungs": rungs, "front": [r["key"] for r in front], "rule": RULE,
            "budget_range_bits_per_weight": list(LOW_RANGE),
            "ladders": [{"group_size": lad["group_size"], "meta_bits": lad["meta_bits"],
                         "map": {b: r["quantizer"] for b, r in lad["rungs"].items()},
                         "bits_per_weight": {b: r["bits_per_weight"] for b, r in lad["rungs"].items()},
                         "head_to_head_wins": lad["wins"],
                         "envelope_mean_damage_2.5_4.0": lad["score_low"],
                         "envelope_mean_damage_4.0_8.0": lad["score_high"]} for lad in all_ladders],
            "targets": targets(ok, rungs)}


def targets(ok: list[dict], rungs: dict) -> dict:
    """Issue #22's targets: 3-bit <= 3.3 bits/weight with damage within 5 % of HQQ g64 (axis 0,
    fp16 metadata, as before #22); 2-bit <= 2.3."""
    ref = next((r for r in ok if r["quantizer"] == "hqq028" and r["bits"] == 3 and r["group_size"] == 64), None)
    out = {"3bit_bits_per_weight": rungs["3"]["bits_per_weight"], "3bit_le_3.3": rungs["3"]["bits_per_weight"] <= 3.3,
           "2bit_bits_per_weight": rungs["2"]["bits_per_weight"], "2bit_le_2.3": rungs["2"]["bits_per_weight"] <= 2.3}
    if ref is not None:
        for t in TEXTS:
            ratio = rungs["3"][f"damage_{t}"] / ref[f"damage_{t}"]
            out[f"3bit_damage_{t}_over_hqq_g64"] = ratio
        out["3bit_damage_within_5pct_of_hqq_g64"] = all(out[f"3bit_damage_{t}_over_hqq_g64"] <= 1.05 for t in TEXTS)
    return out


def main(argv: list[str] | None = None) -> int:
    from quantizer_report import write_outputs

    from autoqra.io import atomic_write_json

    path = Path((argv or sys.argv[1:])[0])
    result = json.loads(path.read_text())
    result["choice"] = choose(result)
    atomic_write_json(path, result)
    write_outputs(result, path)
    print(f"chosen ladder: {result['choice']['ladder']} -> {path}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
