"""Figure (PNG + PDF) and Markdown table of benchmarks/quantizer_bench.py's result (the bit ladder)."""

from __future__ import annotations

from pathlib import Path

from quantizer_choice import TEXTS, mean_damage, pareto_front

GROUP_COLORS = {32: "tab:purple", 64: "tab:blue", 128: "tab:green"}
FLOOR = 1e-3  # damages at or below are drawn here (log axis)


def _style(r: dict) -> dict:
    q = r["quantizer"]
    if q == "nf4":
        return {"marker": "*", "color": "tab:red", "ms": 13, "mfc": "tab:red"}
    if q == "int8":
        return {"marker": "D", "color": "tab:orange", "ms": 8, "mfc": "tab:orange"}
    c = GROUP_COLORS.get(r["group_size"], "gray")
    if q == "hqq028":
        return {"marker": "x", "color": c, "ms": 8, "mfc": "none"}
    return {"marker": "s" if r["meta_bits"] == 8 else "o", "color": c, "ms": 7,
            "mfc": c if r["meta_bits"] == 8 else "none"}


def _legend_handles(rows: list[dict]):
    from matplotlib.lines import Line2D

    seen, handles = set(), []
    for r in rows:
        label = r["name"]
        if label in seen:
            continue
        seen.add(label)
        s = _style(r)
        handles.append(Line2D([], [], ls="none", marker=s["marker"], color=s["color"], mfc=s["mfc"], ms=s["ms"] * 0.8,
                              label=label.replace("hqq028", "hqq 0.2.8 layout")))
    return handles


def figure(result: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted((r for r in result["rows"] if r["status"] == "ok"), key=lambda r: r["key"])
    c = result.get("choice") or {}
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.6))
    panels = [(t, lambda r, t=t: r[f"damage_{t}"], f"{t}: {result['tokens'][t]} tokens, "
               f"{result['documents'][t]} documents") for t in TEXTS]
    panels.append(("mean", mean_damage, "mean of the two texts: Pareto front and the chosen ladder"))
    for ax, (_name, dmg, title) in zip(axes, panels, strict=True):
        for r in rows:
            s = _style(r)
            ax.plot(r["bits_per_weight"], max(dmg(r), FLOOR), ls="none", marker=s["marker"], color=s["color"],
                    mfc=s["mfc"], ms=s["ms"], alpha=0.9)
        for b in (2, 3, 4, 8):
            ax.axvline(b, color="0.85", lw=0.8, zorder=0)
        ax.set_yscale("log")
        ax.set_xlabel("bits per weight, stored (codes + scale/zero metadata)")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel(f"loss increase over 16-bit (nats/token; ≤ {FLOOR:g} drawn at {FLOOR:g})")
    ax = axes[2]
    front = pareto_front([r for r in rows if r["quantizer"] != "hqq028"])
    fx = [r["bits_per_weight"] for r in front]
    fy = [max(mean_damage(r), FLOOR) for r in front]
    ax.step(fx, fy, where="post", color="black", lw=1, label="Pareto front of the storable configurations")
    if c.get("rungs"):
        pts = sorted((r["bits_per_weight"], max(r["mean_damage"], FLOOR), r["key"]) for r in c["rungs"].values())
        ax.plot([p[0] for p in pts], [p[1] for p in pts], color="crimson", lw=2, alpha=0.6,
                label="chosen ladder (rung defaults)")
        for x, y, key in pts:
            ax.annotate(f"{key}\n{x:.3f} bits/weight", (x, y), fontsize=7, color="crimson", xytext=(6, 4),
                        textcoords="offset points")
        lo, hi = c["budget_range_bits_per_weight"]
        ax.axvspan(lo, hi, color="gold", alpha=0.12, label=f"budgets scored below 4 bits ({lo}–{hi} bits/weight)")
        ax.set_title(f"mean of the two texts; chosen: {c['ladder']}", fontsize=8)
    ax.legend(fontsize=7, loc="lower left")
    axes[1].legend(handles=_legend_handles(rows), fontsize=7, ncol=2, loc="upper right",
                   title="quantizer-group-metadata bits", title_fontsize=7)
    fig.suptitle(f"The bit ladder at equal memory: quantization damage before fine-tuning vs stored bits per weight, "
                 f"{result['model_name']} (all 7 projections of every block; {result.get('weights_note', '')})",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=130)
    fig.savefig(png.with_suffix(".pdf"))
    plt.close(fig)


def _ci(alt: dict, t: str) -> str:
    lo, hi = alt[f"ci95_{t}_alt_minus_chosen"]
    return f"[{lo:+.3f}, {hi:+.3f}]" + ("*" if lo > 0 or hi < 0 else "")


def table_markdown(result: dict) -> str:
    """Every configuration (bits/weight incl. metadata, memory model check, damage) and the chosen ladder."""
    c = result.get("choice") or {}
    chosen = {r["key"] for r in c.get("rungs", {}).values()}
    front = set(c.get("front", []))
    lines = [f"Model {result['model_name']} ({result['weights_note']}); held-out: {result['heldout_source']}, "
             f"{result['tokens']['heldout']} tokens in {result['documents']['heldout']} documents; validation: "
             f"{result['tokens']['validation']} response tokens in {result['documents']['validation']} examples. "
             f"16-bit loss: held-out {result['base_loss']['heldout']:.4f}, validation "
             f"{result['base_loss']['validation']:.4f} nats/token. Bits per weight: stored bytes of all "
             f"{result['n_quantized_params']:,} block-projection weights (codes + metadata) × 8 / weights; "
             "memory model off = its prediction − stored bytes.", "",
             "| configuration | rung | group | meta bits | bits/weight (stored) | memory model off (B) | "
             "damage held-out | damage validation | front | chosen |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | :---: | :---: |"]
    for r in sorted((r for r in result["rows"] if r["status"] == "ok"), key=lambda r: (r["bits"], r["bits_per_weight"])):
        off = r.get("memory_model_bytes_off")
        same = f" (= {r['damage_from']})" if r.get("damage_from") else ""
        lines.append(f"| {r['key']}{same} | {r['bits']} | {r['group_size'] or '—'} | {r['meta_bits'] or '—'} | "
                     f"{r['bits_per_weight']:.4f} | {'—' if off is None else off} | {r['damage_heldout']:+.4f} | "
                     f"{r['damage_validation']:+.4f} | {'yes' if r['key'] in front else ''} | "
                     f"{'**yes**' if r['key'] in chosen else ''} |")
    if c.get("rungs"):
        lines += ["", f"**Chosen ladder**: {c['ladder']}.", "",
                  "| rung | chosen | bits/weight (stored) | damage held-out | damage validation | on front | "
                  "alternatives at this rung: held-out Δ vs chosen, 95 % CI (* resolved) |",
                  "| ---: | --- | ---: | ---: | ---: | :---: | --- |"]
        for b, r in c["rungs"].items():
            alts = "; ".join(f"{a['key']} {_ci(a, 'heldout')}" for a in r["alternatives"]
                             if not a["key"].startswith("hqq028"))
            lines.append(f"| {b} | {r['key']} | {r['bits_per_weight']:.4f} | {r['damage_heldout']:+.4f} | "
                         f"{r['damage_validation']:+.4f} | {'yes' if r['on_front'] else 'no'} | {alts} |")
        lines += ["", "Ladders by the rule's score (mean envelope damage, nats/token):", "",
                  "| group | meta bits | map | head-to-head wins | 2.5–4.0 bits/weight | 4.0–8.0 |",
                  "| ---: | ---: | --- | ---: | ---: | ---: |"]
        for lad in c["ladders"]:
            m = ", ".join(f"{b}: {q}" for b, q in lad["map"].items())
            lines.append(f"| {lad['group_size']} | {lad['meta_bits']} | {m} | {lad['head_to_head_wins']} | "
                         f"{lad['envelope_mean_damage_2.5_4.0']:.4f} | {lad['envelope_mean_damage_4.0_8.0']:.4f} |")
        t = c["targets"]
        lines += ["", "Issue #22 targets: " + ", ".join(f"{k} = {v:.4f}" if isinstance(v, float) and not isinstance(v, bool)
                                                        else f"{k} = {v}" for k, v in t.items()) + "."]
        lines += ["", f"Rule: {c['rule']}"]
    lines.append("")
    return "\n".join(lines)


def write_outputs(result: dict, path: Path) -> None:
    """The figure (PNG + PDF) and the markdown table beside the JSON."""
    from autoqra.io import atomic_write_text

    figure(result, path.with_suffix(".png"))
    atomic_write_text(path.with_suffix(".md"), table_markdown(result))

