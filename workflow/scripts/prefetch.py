"""Rules prefetch_model / prefetch_data / prefetch_lm_eval: downloads on the submit host."""
import os

from autoqra import prefetch

prefetch.go_online()  # before any HF library is imported: this job alone may use the network
from autoqra.io import atomic_write_json  # noqa: E402
from autoqra.runlog import setup_logging  # noqa: E402

sm = snakemake  # noqa: F821  (injected by Snakemake)
log = setup_logging(sm.log[0])
log.info("HF_HOME=%s, HF_TOKEN set: %s", os.environ.get("HF_HOME", "~/.cache/huggingface"),
         bool(os.environ.get("HF_TOKEN")))
if sm.rule == "prefetch_model":
    record = prefetch.model_record(sm.params.spec)
elif sm.rule == "prefetch_data":
    record = prefetch.data_record(sm.params.spec)
elif sm.rule == "prefetch_lm_eval":
    record = prefetch.lm_eval_record(sm.params.tasks, sm.params.task_dir)
else:
    raise ValueError(f"prefetch.py does not handle rule {sm.rule}")
atomic_write_json(sm.output[0], record)
log.info("%s: %s", sm.rule, record)
