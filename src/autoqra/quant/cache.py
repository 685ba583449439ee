"""On-disk cache of quantized projections, so each (base model, block, projection, bits, quantizer,
and for HQQ group size and axis) is quantized once and every later plan only loads ready tensors.

Layout: ``<root>/quant/<base_id>/<variant>-b<bits>-v<format>/<block>.<proj>.safetensors`` with
``<variant>`` = ``hqq-g<group>-a<axis>-m<meta_bits>``, ``nf4`` or ``int8`` (bitsandbytes ignores group and axis). The base
id is a hash of the base model's weight files, so a changed base model never reuses stale entries.
Writes are atomic (temp file + rename); concurrent writers of the same entry are harmless.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from autoqra.errors import ModelError

QUANT_FORMAT = 2  # bump when the stored layout changes (2: exactly packed HQQ codes, meta_bits in the key)


def base_sha(model_dir: str | os.PathLike) -> str:
    """Identity of a prepared base model: sha256 over its weight-file hashes (from manifest.json)."""
    manifest = Path(model_dir) / "manifest.json"
    try:
        shas = json.loads(manifest.read_text())["weights_sha256"]
    except (OSError, KeyError, json.JSONDecodeError) as e:
        raise ModelError(f"{manifest}: cannot read the base model's weight hashes ({e}); "
                         "prepare the model with rule model_prepare / autoqra.models.prepare_model") from None
    canon = json.dumps(shas, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()


def base_id(model_dir: str | os.PathLike) -> str:
    """Short form of :func:`base_sha` used in cache paths."""
    return base_sha(model_dir)[:16]


class QuantCache:
    """Quantized-projection store for one base model."""

    def __init__(self, root: str | os.PathLike, base: str):
        self.cache_dir = Path(root)
        self.root = self.cache_dir / "quant" / base
        self.base = base
        self.hits = 0
        self.misses = 0

    def path(self, quantizer: str, group_size: int, axis: int, bits: int, block: int, proj: str,
             meta_bits: int = 16) -> Path:
        variant = f"hqq-g{group_size}-a{axis}-m{meta_bits}" if quantizer == "hqq" else quantizer
        return self.root / f"{variant}-b{bits}-v{QUANT_FORMAT}" / f"{block}.{proj}.safetensors"

    def get_or_create(self, quantizer: str, group_size: int, axis: int, bits: int, block: int, proj: str,
                      make, meta_bits: int = 16) -> dict[str, torch.Tensor]:
        """The cached state, or ``make()``'s result after storing it."""
        p = self.path(quantizer, group_size, axis, bits, block, proj, meta_bits)
        if p.is_file():
            try:
                state = load_file(str(p))
                self.hits += 1
                return state
            except Exception:  # a truncated file from an old crash: rebuild it
                p.unlink(missing_ok=True)
        state = make()
        self.misses += 1
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
        os.close(fd)
        try:
            save_file(state, tmp)
            os.replace(tmp, p)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return state
