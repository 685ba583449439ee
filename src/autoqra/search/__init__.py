"""Pure search code (no file or model I/O): the search space, operators, surrogates, Pareto
tools, the evolutionary Stage 1 and the trust-region Stage 2. Deterministic for a seed: every
random choice draws from a ``numpy.random.Generator`` passed in."""
