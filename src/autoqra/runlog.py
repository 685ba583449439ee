"""Logging set-up for pipeline scripts: everything goes to the rule's log file and to stderr."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path


def setup_logging(log_path: str | os.PathLike | None = None, level: int = logging.INFO) -> logging.Logger:
    """Send ``logging`` output to ``log_path`` (if given) and stderr; return the autoqra logger."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w", encoding="utf-8"))
    logging.basicConfig(level=level, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return logging.getLogger("autoqra")


def set_threads(n: int | None) -> None:
    """Match torch's intra-op threads to the cores Snakemake gave the job (oversubscribing a
    2-core machine slows training 15-20x)."""
    if n:
        import torch

        torch.set_num_threads(int(n))
