"""Paper tables and figures from the pipeline's result files (pandas and matplotlib only, no torch).

- ``load``: readers of results/summary, search, final, sensitivity, random, optuna and methods_hf files;
- ``tables``: Tables 1-4 as CSV and booktabs LaTeX (``write_tables``);
- ``uncertainty`` (+ ``variance``): intervals over documents (bootstrap) and seeds (t-based), paired
  across methods, identical plans detected by hash; ``power``: variance components and seed costs;
- ``claims`` (+ ``claim_stats``, ``claim_inputs``): Table 5, each paper claim beside our number and a verdict;
- ``figures`` (+ ``fig_pareto``, ``fig_search``, shared ``plotting``): Figures 1-6, one function each.

This module itself imports nothing heavy: the Snakefile reads ``paper_targets`` at parse time.
"""

from __future__ import annotations

from collections.abc import Sequence

PAPER_DIR = "paper_figures"
TABLES = ("table1_main", "table2_efficiency", "table3_ablations", "table4_search_cost")
TABLE_FORMATS = ("csv", "tex")
CLAIMS_TABLE = "table5_claims"
# Figure 1 plots the random search's plans, so it exists only when a random method runs.
RANDOM_FIGURES = ("fig1_quant_error_vs_score",)
FIGURES = ("fig2_pareto", "fig3_search_efficiency", "fig4_plan", "fig5_stage2", "fig6_priors")
FIGURE_FORMATS = ("pdf", "png")


def paper_targets(models: Sequence[str], with_random: bool = True, out_dir: str = PAPER_DIR) -> list[str]:
    """Every file the paper rules write: the tables (all models together), then each figure per model."""
    figures = (RANDOM_FIGURES if with_random else ()) + FIGURES
    out = [f"{out_dir}/{t}.{ext}" for t in (*TABLES, CLAIMS_TABLE) for ext in TABLE_FORMATS]
    out += [f"{out_dir}/{f}_{m}.{ext}" for f in figures for m in models for ext in FIGURE_FORMATS]
    return out
