"""The paper's figures, one function per figure (rules paper_fig1 ... paper_fig6): Figures 1, 4, 5
and 6 here, Figure 2 in ``fig_pareto``, Figure 3 in ``fig_search`` (re-exported here); shared helpers
in ``plotting``.

Each ``figN_*`` function reads the result files it is given, returns the matplotlib ``Figure`` and,
with ``out=[...pdf, ...png]``, writes it (atomically, PNG at 300 dpi). Figures are built on
``matplotlib.figure.Figure`` with an explicit Agg canvas, never pyplot, so no GUI backend or global
figure state is involved. Optional inputs (random search, optuna, HF scores of the methods) may be
``None``: the curve is skipped and the legend says so. Failed evaluations (NaN score) are not drawn.
"""


from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from autoqra.report.fig_pareto import fig2_pareto
from autoqra.report.fig_search import fig3_search_efficiency
from autoqra.report.load import (
    PathLike,
    read_history,
    read_json,
    read_priors,
    read_random_summary,
)
from autoqra.report.plotting import (
    MB,
    MEMORY_LABEL,
    SCORE_LABEL,
    _empty,
    _figure,
    _figure_function,
    _note,
    _place_labels,
    spearman,
)

__all__ = ["fig1_quant_error_vs_score", "fig2_pareto", "fig3_search_efficiency", "fig4_plan", "fig5_stage2",
           "fig6_priors"]


@_figure_function
def fig1_quant_error_vs_score(random_summary: PathLike | None, model: str) -> Figure:
    """Random feasible plans: quantization error before fine-tuning vs HF score after it."""
    fig = _figure(3.6, 3.7)
    ax = fig.add_subplot()
    ax.set_title(f"{model}: quantization error vs.\nfine-tuned score (random plans)")
    ax.set_xlabel("Quantization error before fine-tuning\n(Δ validation loss, nats/token)")
    ax.set_ylabel(SCORE_LABEL)
    data = read_random_summary(random_summary)
    if data is None:
        _empty(ax, "random search not run")
        return fig
    obs = data["observations"]
    ok = obs[np.isfinite(obs["score"]) & np.isfinite(obs["quant_error"]) & (obs["memory"] <= data["budget_bytes"])]
    if ok.empty:
        _empty(ax, "no feasible random plan with a\nscore and a quantization error")
        return fig
    sc = ax.scatter(ok["quant_error"], ok["score"], c=ok["memory"] / MB, cmap="viridis", s=22,
                    edgecolors="black", linewidths=0.3, zorder=3)
    fig.colorbar(sc, ax=ax).set_label(MEMORY_LABEL)
    low, best = ok.loc[ok["quant_error"].idxmin()], ok.loc[ok["score"].idxmax()]
    ax.scatter([low["quant_error"]], [low["score"]], s=90, marker="s", facecolors="none", edgecolors="tab:red",
               linewidths=1.0, zorder=4, label="lowest quant. error")
    ax.scatter([best["quant_error"]], [best["score"]], s=120, marker="o", facecolors="none",
               edgecolors="black", linewidths=1.0, zorder=4, label="best HF score")
    skipped = len(obs) - len(ok)
    if skipped:
        _note(ax, f"{skipped} failed/infeasible not shown")
    rho = f"{spearman(ok['quant_error'], ok['score']):.2f}".replace("-", "−")
    fig.legend(*ax.get_legend_handles_labels(), title=f"Spearman ρ = {rho} (n = {len(ok)})",
               loc="outside lower center", ncols=2)
    return fig


# Label offsets (points) tried in turn: beside the point, then farther out with a leader line.


def _bars_with_prior(ax, blocks, values, prior_blocks, prior, bar_label: str, prior_label: str, color: str):
    ax.bar(blocks, values, color=color, width=0.8, label=bar_label)
    ax.set_ylabel(bar_label)
    ax.set_yticks(sorted(set(values)))
    ax.grid(axis="x", visible=False)
    twin = ax.twinx()
    twin.plot(prior_blocks, prior, "-o", color="black", markersize=3, linewidth=1.0, label=prior_label)
    twin.set_ylim(0, 1.05)
    twin.set_ylabel(f"{prior_label} (normalised)")
    twin.grid(False)
    handles = [*ax.get_legend_handles_labels()[0], *twin.get_legend_handles_labels()[0]]
    twin.legend(handles, [h.get_label() for h in handles], loc="upper right", ncols=2)
    ax.set_ylim(0, max(values) * 1.3)


@_figure_function
def fig4_plan(plan: PathLike, priors: PathLike, model: str) -> Figure:
    """Bits and ranks per block of the final AutoQRA plan, with the priors I_q and I_r."""
    p = read_json(plan, ["bits", "ranks"])
    pri = read_priors(priors)
    bits, ranks = list(p["bits"]), list(p["ranks"])
    blocks = np.arange(len(bits))
    fig = _figure(7.0, 4.0)
    top, bottom = fig.subplots(2, 1, sharex=True)
    _bars_with_prior(top, blocks, bits, pri["block"], pri["iq_norm"], "Bits", "$I_q$", "tab:blue")
    _bars_with_prior(bottom, blocks, ranks, pri["block"], pri["ir_norm"], "LoRA rank", "$I_r$", "tab:orange")
    bottom.set_xlabel("Transformer block index")
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.set_xlim(-0.7, len(bits) - 0.3)
    fig.suptitle(f"{model}: final AutoQRA plan (mean {np.mean(bits):.2f} bits, mean rank {np.mean(ranks):.1f})")
    return fig


@_figure_function
def fig5_stage2(history: PathLike, model: str) -> Figure:
    """Utility of the Stage-1 seeds and of each Stage-2 batch, best-so-far utility, trust-region radius."""
    hist = read_history(history)
    obs = hist["observations"].copy()
    obs["x"] = np.where(obs["origin"] < 0, 0, obs["origin"] + 1)
    traj = hist["trajectory"]
    last = int(max(obs["x"].max() if len(obs) else 0, len(traj)))
    fig = _figure(4.5, 3.0)
    ax = fig.add_subplot()
    feasible = obs["memory"] <= hist["final"].get("budget_bytes", np.inf)
    ok = obs[np.isfinite(obs["utility"]) & feasible]
    for x, grp in ok.groupby("x"):
        # spread the points of one iteration a little so that equal utilities stay visible
        dx = np.linspace(-0.15, 0.15, len(grp)) if len(grp) > 1 else np.zeros(1)
        label = "Stage-1 plans" if x == 0 else "Stage-2 candidates"
        ax.scatter(x + dx, grp["utility"], s=16, color="0.55" if x == 0 else "tab:blue", zorder=3,
                   label=None if label in ax.get_legend_handles_labels()[1] else label)
    best = [ok[ok["x"] <= x]["utility"].max() for x in range(last + 1)]
    ax.plot([*range(last + 1), last + 0.5], [*best, best[-1]], "-", color="tab:red", drawstyle="steps-post", label="best so far", zorder=4)
    ax.set_xticks(range(last + 1), ["Stage 1", *[str(t) for t in range(1, last + 1)]])
    ax.set_xlim(-0.5, last + 0.5)
    ax.set_xlabel("Stage-2 iteration")
    ax.set_ylabel("Utility α·P̃ − (1−α)·M̃")
    ax.grid(axis="x", visible=False)
    if traj:
        twin = ax.twinx()
        radius = [traj[0].get("radius"), *[t.get("radius_after") for t in traj]]
        twin.plot([*range(len(radius)), len(radius) - 0.5], [*radius, radius[-1]], drawstyle="steps-post", color="0.2", linestyle="--", linewidth=1.0,
                  label="trust-region radius")
        twin.set_ylabel("Trust-region radius (edits)")
        twin.yaxis.set_major_locator(MaxNLocator(integer=True))
        twin.set_ylim(0, max(r for r in radius if r is not None) + 1)
        twin.grid(False)
        handles = [*ax.get_legend_handles_labels()[0], *twin.get_legend_handles_labels()[0]]
    else:
        _note(ax, "no Stage-2 iterations")
        handles = ax.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], loc="lower right")
    ax.set_title(f"{model}: Stage-2 trust-region refinement")
    return fig


@_figure_function
def fig6_priors(priors: PathLike, correlations: PathLike, model: str) -> Figure:
    """I_q against I_r per block, labelled by block index, with their correlations."""
    pri = read_priors(priors)
    corr = read_json(correlations, ["correlations"])["correlations"]
    fig = _figure(4.6, 4.2)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=0.8, label="$I_q = I_r$")
    sc = ax.scatter(pri["iq_norm"], pri["ir_norm"], c=pri["block"], cmap="viridis", s=18, zorder=3,
                    edgecolors="black", linewidths=0.3)
    fig.colorbar(sc, ax=ax).set_label("Block index (depth)")
    ax.set_xlim(-0.05, 1.1)
    ax.set_ylim(-0.05, 1.1)
    ax.legend(loc="lower right")
    ax.set_xlabel("$I_q$ quantization sensitivity (normalised)")
    ax.set_ylabel("$I_r$ adapter plasticity (normalised)")
    k = corr.get("k")
    ax.set_title(f"{model}: sensitivity priors per block\nPearson r = {corr.get('pearson', float('nan')):.2f}, "
                 f"Spearman ρ = {corr.get('spearman', float('nan')):.2f}, "
                 f"top-{k} overlap = {corr.get('topk_overlap', float('nan')):.2f}")
    _place_labels(ax, list(pri["iq_norm"]), list(pri["ir_norm"]), [str(int(b)) for b in pri["block"]])
    return fig
