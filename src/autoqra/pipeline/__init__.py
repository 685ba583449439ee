"""File-level stage steps called by the thin Snakemake scripts: each reads its inputs, calls the
pure library (search, quant, train, evaluate), and writes its outputs atomically with a manifest.
Tested without Snakemake."""
