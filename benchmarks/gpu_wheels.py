"""Helpers of benchmarks/gpu_prepare.sh: trim the bitsandbytes wheel to one CUDA library, and check
that every distribution the device check imports is either on the GPU machine or carried as a wheel.

    python benchmarks/gpu_wheels.py trim WHEEL --keep cuda130 --out DIR
    python benchmarks/gpu_wheels.py audit DRY_JSON WHEEL_DIR     # DRY_JSON: gpu_check.py --dry's output
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import sys
import zipfile
from pathlib import Path

# The GPU machine's image ('cuda'), as the device tool's KINDS.md lists it (read 2026-11-17): Python 3.12,
# torch 2.11 (cu130), transformers 5.17, huggingface_hub 1.33, peft, accelerate, pandas, pyarrow, ...
DEVICE_PACKAGES = set("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna
imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft
pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers
statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope
triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl
zipp""".split())
# Imported here only through this machine's newer huggingface_hub (2.x; the device's 1.33 uses httpx) or
# as optional fallbacks (requests tries chardet after charset-normalizer); the project itself is on PYTHONPATH.
NOT_NEEDED = {"autoqra", "httpx2", "httpcore2", "truststore", "chardet"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def trim(wheel: Path, keep: str, out_dir: Path) -> Path:
    """A copy of a bitsandbytes wheel without the native libraries of other CUDA/ROCm versions (the CPU
    library stays); RECORD is rewritten to list what remains."""
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / wheel.name
    drop = re.compile(r"libbitsandbytes_(cuda|rocm|xpu)\w*\.so$")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        record_name = next(n for n in src.namelist() if n.endswith(".dist-info/RECORD"))
        lines = []
        for info in src.infolist():
            name = info.filename
            if name == record_name or (drop.search(name) and f"_{keep}." not in name):
                continue
            data = src.read(name)
            dst.writestr(info, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            lines.append(f"{name},sha256={digest},{len(data)}")
        lines.append(f"{record_name},,")
        dst.writestr(record_name, "\n".join(lines) + "\n")
        kept = [n for n in dst.namelist() if drop.search(n)]
    if not kept:
        raise SystemExit(f"trim: {wheel.name} has no libbitsandbytes_{keep}.so; nothing would run on the GPU")
    return out


def carried(wheel_dir: Path) -> set[str]:
    return {norm(p.name.split("-")[0]) for p in wheel_dir.glob("*.whl")}


def audit(dry_json: Path, wheel_dir: Path) -> list[str]:
    """Distributions the dry check imported that are neither on the GPU machine nor carried."""
    imported = json.loads(dry_json.read_text())["imported_distributions"]
    have = {norm(n) for n in DEVICE_PACKAGES} | carried(wheel_dir) | {norm(n) for n in NOT_NEEDED}
    return sorted(n for n in imported if norm(n) not in have)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("trim")
    t.add_argument("wheel", type=Path)
    t.add_argument("--keep", default="cuda130")
    t.add_argument("--out", type=Path, required=True)
    a = sub.add_parser("audit")
    a.add_argument("dry_json", type=Path)
    a.add_argument("wheel_dir", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "trim":
        out = trim(args.wheel, args.keep, args.out)
        print(f"gpu_wheels: {out} ({out.stat().st_size / 2**20:.1f} MiB)")
        return 0
    missing = audit(args.dry_json, args.wheel_dir)
    if missing:
        print(f"gpu_wheels: the check imports {missing}, which the GPU machine lacks and .gpu_wheels does not carry")
        return 1
    print("gpu_wheels: every distribution the check imports is on the GPU machine or carried")
    return 0


if __name__ == "__main__":
    sys.exit(main())
