"""Rule memory_budget: resolve the budget and tabulate reference plans for one model."""
from pathlib import Path

from autoqra.io import atomic_write_json, atomic_write_tsv
from autoqra.manifest import build_manifest
from autoqra.memory import ModelShape, budget_report
from autoqra.runlog import setup_logging

sm = snakemake  # noqa: F821  (injected by Snakemake)
log = setup_logging(sm.log[0])
shape = ModelShape.from_path(sm.input.model)
info, rows = budget_report(shape, sm.params.space, sm.params.budget)
log.info("budget %s: %.4f GB for the blocks (+%.4f GB fixed)", info["description"],
         info["plan_bytes"] / 1e9, info["fixed_bytes"] / 1e9)
info["manifest"] = build_manifest("memory_budget", {"space": sm.params.space, "budget": sm.params.budget},
                                  inputs={"model_config": str(Path(sm.input.model) / "config.json")})
header = list(rows[0])
atomic_write_tsv(sm.output.table, header, [[r[k] for k in header] for r in rows])
atomic_write_json(sm.output.budget, info)
