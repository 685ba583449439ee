"""The paper's figures, one function per figure (rules paper_fig1 ... paper_fig6).

Each ``figN_*`` function reads the result files it is given, returns the matplotlib ``Figure`` and,
with ``out=[...pdf, ...png]``, writes it (atomically, PNG at 300 dpi). Figures are built on
``matplotlib.figure.Figure`` with an explicit Agg canvas, never pyplot, so no GUI backend or global
figure state is involved. Optional inputs (random search, optuna, HF scores of the methods) may be
``None``: the curve is skipped and the legend says so. Failed evaluations (NaN score) are not drawn.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import Bbox

from autoqra.report.load import (
    PathLike,
    budget_bytes,
    read_front,
    read_history,
    read_json,
    read_methods_hf,
    read_priors,
    read_random_summary,
)

MB = 1e6
DPI = 300
# Paper-readable at the printed size (3.3-7 in): no text below 8 pt.
RC = {"font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "xtick.labelsize": 8, "ytick.labelsize": 8,
      "legend.fontsize": 8, "legend.title_fontsize": 8, "figure.titlesize": 9, "pdf.fonttype": 42,
      "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.5, "lines.linewidth": 1.2,
      "lines.markersize": 4, "legend.framealpha": 0.9}
SCORE_LABEL = "HF score (−val. loss − λ·general-text loss, nats/token)"  # λ = evaluation.general_weight
MEMORY_LABEL = "Memory M(C) (MB)"


def save_figure(fig: Figure, paths: Sequence[PathLike]) -> None:
    """Write ``fig`` to every path (format from the suffix), each atomically."""
    for path in map(Path, paths):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
        os.close(fd)
        try:
            # Fixed metadata so that re-running on the same results gives the same PDF bytes.
            meta = {"Creator": "autoqra.report", "CreationDate": None} if path.suffix == ".pdf" else None
            fig.savefig(tmp, dpi=DPI, metadata=meta)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _figure_function(fn: Callable[..., Figure]) -> Callable[..., Figure]:
    """Build under the paper style; save to ``out`` when given."""
    @functools.wraps(fn)
    def wrapper(*args, out: Sequence[PathLike] | None = None, **kwargs) -> Figure:
        with matplotlib.rc_context(RC):
            fig = fn(*args, **kwargs)
            if out:
                save_figure(fig, out)
        return fig
    return wrapper


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _note(ax, label: str) -> None:
    """A legend-only entry (e.g. 'optuna: not run')."""
    ax.plot([], [], " ", label=label)


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", wrap=True)


def spearman(x: pd.Series, y: pd.Series) -> float:
    """Spearman's rank correlation (Pearson of average ranks); NaN below 3 points."""
    x, y = pd.Series(x, dtype=float).reset_index(drop=True), pd.Series(y, dtype=float).reset_index(drop=True)
    return float(x.rank().corr(y.rank())) if len(x) >= 3 else float("nan")


def best_so_far(score: Sequence[float], memory: Sequence[float], budget: float,
                feasible: Sequence[bool] | None = None) -> np.ndarray:
    """Best feasible score after each evaluation (NaN until the first feasible scored one)."""
    s, m = np.asarray(score, dtype=float), np.asarray(memory, dtype=float)
    ok = np.isfinite(s) & (m <= budget)
    if feasible is not None:
        ok &= np.asarray(feasible, dtype=bool)
    best = np.maximum.accumulate(np.where(ok, s, -np.inf)) if len(s) else np.array([])
    return np.where(np.isfinite(best), best, np.nan)


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
_NEAR = [(5, 3), (5, -3), (-5, 3), (-5, -3), (0, 7), (0, -7), (7, 0), (-7, 0)]
_OFFSETS = [(k * dx, k * dy, k > 1) for k in (1, 2.2, 3.4, 4.6, 6.0) for dx, dy in _NEAR]


def _marker_boxes(ax, half_pt: float = 3.0) -> list[Bbox]:
    """Display-space boxes around every marker/vertex drawn on ``ax`` (obstacles for labels)."""
    pts = [c.get_offset_transform().transform(c.get_offsets()) for c in ax.collections if len(c.get_offsets())]
    pts += [line.get_transform().transform(np.column_stack(line.get_data()).astype(float)) for line in ax.lines
            if line.get_marker() not in (None, "", "None", " ") and len(line.get_xdata())]
    if not pts:
        return []
    xy = np.vstack(pts)
    r = half_pt * ax.figure.dpi / 72
    return [Bbox.from_extents(x - r, y - r, x + r, y + r) for x, y in xy if np.isfinite(x) and np.isfinite(y)]


def _label(ax, x, y, text, dx, dy):
    ha = "left" if dx > 0 else "right" if dx < 0 else "center"
    va = "bottom" if dy > 0 else "top" if dy < 0 else "center"
    t = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va, zorder=5)
    t.set_in_layout(False)  # labels must not reshape the axes they were placed in
    return t


def _clashes(ax, renderer, x, y, text, dx, dy, obstacles, own: Bbox) -> float:
    """How badly a label at offset (dx, dy) points clashes: obstacles it overlaps (inf outside the axes)."""
    t = _label(ax, x, y, text, dx, dy)
    box = t.get_window_extent(renderer)
    t.remove()
    frame = ax.bbox
    if not (frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1):
        return float("inf")
    return sum(box.overlaps(b) for b in obstacles if not b.overlaps(own))


def _place_labels(ax, xs: Sequence[float], ys: Sequence[float], labels: Sequence[str], gap_pt: float = 1.0) -> None:
    """Text labels beside points, each at the first offset that stays inside the axes and clear of
    markers, the legend and earlier labels (kept ``gap_pt`` apart); where none is free, the offset
    with the fewest clashes. Crowded points are placed first; far offsets get a leader line."""
    fig = ax.figure
    fig.canvas.draw()  # fix limits and layout before measuring
    renderer = fig.canvas.get_renderer()
    obstacles = _marker_boxes(ax)
    if ax.get_legend() is not None:
        obstacles.append(ax.get_legend().get_window_extent(renderer))
    xy = ax.transData.transform(np.column_stack([xs, ys]).astype(float)) if len(xs) else np.zeros((0, 2))
    crowd = [int((np.hypot(*(xy - p).T) < 30 * fig.dpi / 72).sum()) for p in xy]
    for i in sorted(range(len(xs)), key=lambda i: -crowd[i]):
        own = Bbox.from_extents(*(xy[i] - 2), *(xy[i] + 2))
        best, best_clash = _OFFSETS[0], float("inf")
        for offset in _OFFSETS:
            clash = _clashes(ax, renderer, xs[i], ys[i], labels[i], offset[0], offset[1], obstacles, own)
            if clash < best_clash:
                best, best_clash = offset, clash
            if clash == 0:
                break
        dx, dy, leader = best
        box = _label(ax, xs[i], ys[i], labels[i], dx, dy).get_window_extent(renderer)
        if leader:
            line = ax.annotate("", (xs[i], ys[i]), xytext=(dx, dy), textcoords="offset points",
                               arrowprops={"arrowstyle": "-", "linewidth": 0.5, "color": "0.4", "shrinkB": 2})
            line.set_in_layout(False)
        obstacles.append(box.padded(gap_pt * fig.dpi / 72))


@_figure_function
def fig2_pareto(front: PathLike, history: PathLike, budget: PathLike, model: str,
                methods_hf: PathLike | None = None, labels: Mapping[str, str] | None = None) -> Figure:
    """Memory vs HF score: search evaluations, Stage-1 front, final AutoQRA plan, baselines (named by
    ``labels``, method -> display name), budget."""
    front_df, archive = read_front(front)
    hist = read_history(history)
    budget_mb = budget_bytes(budget) / MB
    desc = read_json(budget).get("description", "")
    hf = archive[(archive["fidelity"] == "hf") & np.isfinite(archive["score"])]
    obs = hist["observations"]
    s2 = obs[(obs["origin"] >= 0) & np.isfinite(obs["score"])]
    base = read_methods_hf(methods_hf, labels) if methods_hf else None
    # The final plan's score from the held-out seed of methods_hf (the plan's own method row, same
    # plan hash) when there is one: the selection seeds' scores of a picked plan are biased upwards.
    fin_score, fin_label = hist["final"].get("hf_score"), "AutoQRA final plan"
    if base is not None and "plan_hash" in base.columns:
        own = base[(base["plan_hash"] == hist["final"].get("plan_hash")) & np.isfinite(base["hf_score"])]
        if len(own):
            fin_score, fin_label = float(own["hf_score"].iloc[0]), "AutoQRA final plan (held-out seed)"
    if base is not None:
        ok_status = base["status"].fillna("ok").astype(str).eq("ok")
        base = base[(base["group"] == "baseline") & ok_status & np.isfinite(base["hf_score"])]
    xs = [*(hf["memory"] / MB), *(front_df["memory_bytes"] / MB), budget_mb]
    # Baselines far above the budget (16-bit LoRA) go to a narrow right panel so the region
    # around the budget, where the searched plans lie, keeps its resolution.
    far = base[base["memory_bytes"] / MB > 1.4 * budget_mb] if base is not None else pd.DataFrame()
    fig = _figure(6.0, 4.4)
    if len(far):
        axes = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [5, 1], "wspace": 0.02})
    else:
        axes = [fig.add_subplot()]
    for ax in axes:
        ax.scatter(hf["memory"] / MB, hf["score"], s=14, color="0.6", label="Stage-1 HF evaluations", zorder=2)
        if len(s2):
            ax.scatter(s2["memory"] / MB, s2["score"], s=18, marker="x", color="tab:blue",
                       label="Stage-2 evaluations", zorder=3)
        ax.plot(front_df["memory_bytes"] / MB, front_df["hf_score"], "-o", drawstyle="steps-post",
                color="tab:orange", label="Stage-1 Pareto front", zorder=3)
        fin = hist["final"]
        if fin_score is not None:
            ax.scatter([fin["memory_bytes"] / MB], [fin_score], marker="*", s=160, color="tab:red",
                       edgecolors="black", linewidths=0.5, label=fin_label, zorder=6)
        if base is not None and len(base):
            ax.scatter(base["memory_bytes"] / MB, base["hf_score"], marker="D", s=20, color="tab:green",
                       edgecolors="black", linewidths=0.4, label="baselines (HF score)", zorder=4)
        ax.axvline(budget_mb, color="black", linestyle="--", linewidth=1.0,
                   label=f"budget ({desc})" if desc else "budget")
    main = axes[0]
    near = base[base["memory_bytes"] / MB <= 1.4 * budget_mb] if base is not None else pd.DataFrame()
    xs += list(near["memory_bytes"] / MB) if len(near) else []
    lo, hi = min(xs), max(xs)
    pad = 0.06 * (hi - lo or 1.0)
    main.set_xlim(lo - pad, hi + pad)
    if len(far):
        flo, fhi = (far["memory_bytes"] / MB).min(), (far["memory_bytes"] / MB).max()
        fpad = max(0.05 * (fhi - flo), 0.03 * fhi)
        axes[1].set_xlim(flo - fpad, fhi + fpad)
        main.spines["right"].set_visible(False)
        axes[1].spines["left"].set_visible(False)
        axes[1].tick_params(left=False, labelleft=False)
        axes[1].xaxis.set_major_locator(MaxNLocator(2))
        for ax, xpos in ((main, 1.0), (axes[1], 0.0)):  # the usual // marks of a broken axis
            ax.plot([xpos], [0], transform=ax.transAxes, marker=[(-1, -1.5), (1, 1.5)], markersize=8,
                    color="black", clip_on=False)
    if base is None:
        _note(main, "baselines: no HF scores")
    main.set_ylabel(SCORE_LABEL)
    main.set_xlabel(MEMORY_LABEL)
    fig.suptitle(f"{model}: memory vs. HF score (Stage-1 front, final plan, baselines)")
    fig.legend(*main.get_legend_handles_labels(), loc="outside lower center", ncols=3)
    if base is not None and len(base):
        for ax in axes:
            lo_x, hi_x = ax.get_xlim()
            inside = base[(base["memory_bytes"] / MB >= lo_x) & (base["memory_bytes"] / MB <= hi_x)]
            _place_labels(ax, list(inside["memory_bytes"] / MB), list(inside["hf_score"]), list(inside["label"]),
                          gap_pt=3.0)
    return fig


def _step(ax, y: np.ndarray, label: str, **kw) -> None:
    x = np.arange(1, len(y) + 1)
    ax.plot(x, y, drawstyle="steps-post", label=label, **kw)


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


def __getattr__(name: str):
    """Figure 3 lives in ``autoqra.report.fig_search`` (one module per figure family); this keeps
    ``figures.fig3_search_efficiency`` working without a circular import."""
    if name == "fig3_search_efficiency":
        from autoqra.report.fig_search import fig3_search_efficiency

        return fig3_search_efficiency
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
