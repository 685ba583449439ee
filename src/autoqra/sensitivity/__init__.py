"""Stage 0: per-block sensitivity priors ``I_q`` (quantization fidelity) and ``I_r`` (adapter plasticity).

- ``I_q(ℓ)`` (``fidelity``): mean per-token Jensen–Shannon divergence (nats) between the 16-bit
  model's next-token distribution and that of the model with block ℓ alone at the lowest
  bit-width, on calibration text (``settings.calibration_ids``).
- ``I_r(ℓ)`` (``plasticity``): how much the fine-tuning loss gains from adapter capacity at block ℓ
  (``grad_norm``, default, or ``loss_drop``).
- ``footprint``: the analytic peak memory, checked before any work; ``priors``: normalisation,
  correlations and the priors table; ``stage``: the whole stage, cached.

Both priors are min-max normalised to [0, 1]; ``combined`` is their mean. Deterministic for a seed.
"""

from autoqra.sensitivity.fidelity import fidelity_sensitivity, jsd_from_logits, probe_plan
from autoqra.sensitivity.footprint import stage0_footprint
from autoqra.sensitivity.plasticity import plasticity
from autoqra.sensitivity.priors import (
    PRIOR_COLUMNS,
    correlations,
    normalise,
    read_priors,
    write_priors,
)
from autoqra.sensitivity.settings import PLASTICITY_METHODS, SensitivitySettings, calibration_ids
from autoqra.sensitivity.stage import (
    SENSITIVITY_FORMAT,
    cached_run_sensitivity,
    plan_memory,
    run_sensitivity,
)

__all__ = [
    "PLASTICITY_METHODS", "PRIOR_COLUMNS", "SENSITIVITY_FORMAT", "SensitivitySettings", "cached_run_sensitivity",
    "calibration_ids", "correlations", "fidelity_sensitivity", "jsd_from_logits", "normalise", "plan_memory",
    "plasticity", "probe_plan", "read_priors", "run_sensitivity", "stage0_footprint", "write_priors",
]
