"""Shared plotting helpers of the paper figures (``figures``, ``fig_pareto``, ``fig_search``): the paper
style, atomic saving, the figure decorator, best-so-far curves and label placement that avoids
markers. matplotlib (Agg canvas, never pyplot), numpy and pandas only.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox

from autoqra.report.load import PathLike

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


def _step(ax, y: np.ndarray, label: str, **kw) -> None:
    x = np.arange(1, len(y) + 1)
    ax.plot(x, y, drawstyle="steps-post", label=label, **kw)


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
