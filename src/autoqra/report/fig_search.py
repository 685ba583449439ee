"""Figure 3, search efficiency (rule paper_fig3_search_efficiency): the hypervolume of every
search variant against one shared reference, and the best feasible HF score against the evaluation
cost in HF-equivalents, with each searcher's pick scored at the held-out seed."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from autoqra.report.load import (
    PathLike,
    budget_bytes,
    read_history,
    read_hypervolume,
    read_methods_hf,
    read_optuna_summary,
    read_random_summary,
)
from autoqra.report.plotting import _figure, _figure_function, _note, _step, best_so_far


def _cost_steps(ax, best: np.ndarray, total: float | None, label: str, **kw) -> None:
    """A best-so-far curve of a searcher whose evaluations each cost one HF-equivalent, continued
    flat to ``total`` (its pick's re-evaluations add cost but no point to the curve)."""
    x = np.arange(1, len(best) + 1, dtype=float)
    y = np.asarray(best, dtype=float)
    if total is not None and len(y) and total > x[-1]:
        x, y = np.append(x, total), np.append(y, y[-1])
    ax.plot(x, y, drawstyle="steps-post", label=label, **kw)


def _heldout(methods_hf: PathLike | None, method: str | None) -> float | None:
    if methods_hf is None or method is None:
        return None
    df = read_methods_hf(methods_hf)
    hit = df[(df["method"] == method) & np.isfinite(df["hf_score"])]
    return float(hit["hf_score"].iloc[0]) if len(hit) else None


@_figure_function
def fig3_search_efficiency(hypervolumes: Mapping[str, PathLike], history: PathLike, budget: PathLike, model: str,
                           random_summary: PathLike | None = None, optuna_summary: PathLike | None = None,
                           methods_hf: PathLike | None = None,
                           heldout_methods: Mapping[str, str] | None = None) -> Figure:
    """Left: hypervolume per generation of each search variant (one shared reference point).
    Right: best feasible HF score vs evaluation cost in HF-equivalents (LF evaluations counted by
    their work, ``autoqra.search.cost``), and each searcher's pick at the held-out seed (hollow
    markers at its total cost; ``heldout_methods`` maps "autoqra"/"random" to method names in
    ``methods_hf``)."""
    fig = _figure(7.0, 3.8)
    left, right = fig.subplots(1, 2)
    for variant, path in hypervolumes.items():
        hv = read_hypervolume(path)
        left.plot(hv["generation"], hv["hypervolume"], "-o", label=variant)
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_xlabel("Generation")
    left.set_ylabel("Hypervolume\n(nats/token × budget fraction)")
    left.set_title("Stage-1 hypervolume")
    if hypervolumes:
        left.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=2)
    budget_b = budget_bytes(budget)
    hist = read_history(history)
    names = dict(heldout_methods or {})
    curve = hist.get("cost_curve") or []
    cost = hist.get("cost") or {}
    if curve:  # cost in HF-equivalents, LF included
        xs = [c["cost"] for c in curve]
        ys = [np.nan if c["best_score"] is None else c["best_score"] for c in curve]
        right.plot(xs, ys, drawstyle="steps-post", color="tab:red", linewidth=1.6, label="AutoQRA")
        s1 = (cost.get("stage1") or {}).get("hf_equivalents")
        if s1 is not None and (cost.get("stage2") or {}).get("evaluations"):
            right.axvline(s1, color="tab:red", linestyle=":", linewidth=0.8, label="AutoQRA: Stage 2 starts")
        auto_total = (cost.get("total") or {}).get("hf_equivalents", xs[-1])
        xlabel = "Evaluation cost (HF-equivalents, LF included)"
    else:  # an older history without costs: HF evaluations only
        obs = hist["observations"]
        _step(right, best_so_far(obs["score"], obs["memory"], budget_b), "AutoQRA", color="tab:red", linewidth=1.6)
        auto_total, xlabel = float(len(obs)), "HF evaluations"
    ho = _heldout(methods_hf, names.get("autoqra"))
    if ho is not None:
        right.scatter([auto_total], [ho], marker="*", s=90, facecolors="none", edgecolors="tab:red", zorder=5,
                      label="AutoQRA pick, held-out seed")
    rnd = read_random_summary(random_summary)
    if rnd is not None:
        o = rnd["observations"]
        total = (rnd.get("cost") or {}).get("hf_equivalents")
        _cost_steps(right, best_so_far(o["score"], o["memory"], budget_b), total, "random search", color="tab:blue")
        ho = _heldout(methods_hf, names.get("random"))
        if ho is not None:
            right.scatter([total or len(o)], [ho], marker="o", s=40, facecolors="none", edgecolors="tab:blue",
                          zorder=5, label="random pick, held-out seed")
    else:
        _note(right, "random search: not run")
    opt = read_optuna_summary(optuna_summary)
    if opt is not None:
        t = opt["trials"]
        feas = t["feasible"].fillna(False).astype(bool)
        total = (opt.get("cost") or {}).get("hf_equivalents")
        _cost_steps(right, best_so_far(t["score"], t["memory"], budget_b, feas), total,
                    f"optuna {opt.get('sampler', '')}".strip(), color="tab:green")
        ho = (opt.get("final") or {}).get("heldout_hf_score")
        if ho is not None:
            right.scatter([total or len(t)], [ho], marker="s", s=36, facecolors="none", edgecolors="tab:green",
                          zorder=5, label="optuna pick, held-out seed")
    else:
        _note(right, "optuna: not run")
    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.set_xlabel(xlabel)
    right.set_ylabel("Best feasible HF score\n(−val. loss, nats/token)")
    right.set_title("Best feasible plan so far")
    right.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=2)
    fig.suptitle(f"{model}: search efficiency")
    return fig
