"""Rule finetune: the final fine-tuning of one method's plan for one seed; a run another method
already computed with the same plan, seed and settings is copied (autoqra.runstore)."""
from pathlib import Path

from autoqra.finetune import finetune, finetune_shared
from autoqra.plan import Plan
from autoqra.runlog import set_threads, setup_logging
from autoqra.train import Fidelity, TrainSettings

sm = snakemake  # noqa: F821  (injected by Snakemake)
log = setup_logging(sm.log[0])
set_threads(sm.threads)
p = sm.params.settings
train = TrainSettings(**p["training"], max_seq_len=p["max_seq_len"], progress=False)
plan = Plan.load(sm.input.plan)
rec = (finetune_shared if sm.params.share else finetune)(
    Path(sm.input.model), Path(sm.input.train).parent, plan, cache_dir=sm.params.cache_dir,
    fidelity=Fidelity.from_dict("final", p["fidelity"]), train=train, seed=int(sm.wildcards.seed),
    out_dir=Path(sm.output.record).parent, method=sm.wildcards.method, lora_dropout=p["lora_dropout"],
    alpha_per_rank=p["alpha_per_rank"], manifest_config=dict(p),
    untrained=plan.meta.get("kind") == "base")  # the untuned-base reference method
if rec.get("shared_from"):
    log.info("same run as %s seed %s (key %s): copied", rec["shared_from"]["method"], rec["shared_from"]["seed"],
             rec["share"]["key"])
log.info("%s seed %s: %d steps in %.1f s (%.0f tok/s), final loss %.4f, memory %.0f analytic / %.0f measured bytes",
         rec["method"], rec["seed"], rec["steps"], rec["train_seconds"], rec["tokens_per_s"], rec["final_loss"],
         rec["memory_analytic_bytes"], rec["memory_measured_bytes"])
