"""Figure 2, the Pareto plot (rule paper_fig2_pareto): the Stage-1 front, the archive, the final
plan and every method's plan scored at HF fidelity against memory, with the budget line."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from autoqra.report.load import (
    PathLike,
    budget_bytes,
    read_front,
    read_history,
    read_json,
    read_methods_hf,
)
from autoqra.report.plotting import (
    MB,
    MEMORY_LABEL,
    SCORE_LABEL,
    _figure,
    _figure_function,
    _note,
    _place_labels,
)


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
