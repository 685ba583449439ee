"""Rule sensitivity: Stage-0 importance priors for one model."""
from pathlib import Path

from autoqra.io import atomic_write_json
from autoqra.manifest import write_manifest
from autoqra.plan import quantizer_map
from autoqra.runlog import set_threads, setup_logging
from autoqra.sensitivity import SensitivitySettings, cached_run_sensitivity, write_priors

sm = snakemake  # noqa: F821  (injected by Snakemake)
log = setup_logging(sm.log[0])
set_threads(sm.threads)
space = sm.params.space
settings = SensitivitySettings(**sm.params.settings, bits_ladder=tuple(space["bits"]),
                               max_seq_len=sm.params.max_seq_len,
                               alpha_per_rank=space["lora_alpha_per_rank"], seed=sm.params.seed)
low_quantizer = quantizer_map(space["quantizers"])[settings.resolved_low_bits]  # I_q probes the lowest rung
rows, summary = cached_run_sensitivity(Path(sm.input.model), Path(sm.input.train).parent, sm.params.cache_dir,
                                       settings, quantizer=low_quantizer, group_size=space["group_size"],
                                       hqq_axis=space["hqq_axis"], meta_bits=space.get("meta_bits", 16))
write_priors(rows, sm.output.priors)
atomic_write_json(sm.output.summary, summary)
write_manifest(sm.output.manifest, "sensitivity", {"sensitivity": sm.params.settings, "space": space},
               seed=sm.params.seed, extra={"timings": summary.get("timings"), "memory": summary.get("memory")})
log.info("priors for %d blocks (from the cache: %s); correlations %s", len(rows), summary["cached"],
         summary.get("correlations"))
