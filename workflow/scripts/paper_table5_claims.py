"""Rule paper_table5_claims: the claims table (CSV and LaTeX) from the summaries and search records."""
from autoqra.report.claim_inputs import write_claims
from autoqra.runlog import setup_logging

sm = snakemake  # noqa: F821  (injected by Snakemake)
log = setup_logging(sm.log[0])
models = list(sm.params.models)


def of_model(files, model):
    """The one file of ``model`` among ``files`` (paths carry the model as a directory), else None."""
    hits = [f for f in files if f"/{model}/" in f or f.endswith(f"/{model}")]
    return hits[0] if hits else None


inputs = {m: {"aggregate": sm.input.aggregate, "uncertainty": sm.input.uncertainty,
              "history": of_model(sm.input.histories, m), "random_summary": of_model(sm.input.random, m),
              "fronts": [f for f in sm.input.fronts if f"/{m}/" in f], "priors": of_model(sm.input.priors, m),
              "plans": [f for f in sm.input.plans if f"/{m}/" in f], "search_cost": sm.input.search_cost,
              "methods_hf": of_model(sm.input.methods_hf, m)} for m in models}
df = write_claims(models, inputs, sm.params.methods, sm.params.bits, sm.params.ranks, sm.output.csv, sm.output.tex)
for row in df.itertuples(index=False):
    log.info("%s | %s | %s | %s", row.Model, row.Claim, row[3], row.Verdict)
