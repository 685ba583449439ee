"""The device check (benchmarks/gpu_check.sh + gpu_check.py + gpu_wheels.py) on a machine without a GPU:
it stops at once with a clear message, needs no registry, trims the bitsandbytes wheel, audits what it
imports, and its dry mode runs its training section on the micro model."""

import base64
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/unit/conftest.py


def _script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_check_stops_at_once_without_a_gpu():
    t = time.perf_counter()
    res = subprocess.run(["bash", str(ROOT / "benchmarks/gpu_check.sh")], capture_output=True, text=True,
                         env={**os.environ, "PYTHON": sys.executable}, timeout=60)
    assert res.returncode == 2 and "no CUDA GPU visible" in res.stderr
    assert time.perf_counter() - t < 30  # torch's import, nothing installed or built
    assert _script("gpu_check").main(["--device", "cuda"]) == 2


def test_check_needs_no_registry():
    text = (ROOT / "benchmarks/gpu_check.sh").read_text()
    commands = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    assert not any("setup.sh" in line for line in commands)
    installs = [line for line in commands if "pip" in line and "install" in line]
    assert installs and all("--no-index" in line for line in installs)


def _wheel(path: Path, files: dict[str, bytes]) -> None:
    record = "bitsandbytes-0.50.2.dist-info/RECORD"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr(record, "".join(f"{n},sha256=x,{len(d)}\n" for n, d in files.items()) + f"{record},,\n")


def test_trim_keeps_one_cuda_library_and_a_true_record(tmp_path):
    gw = _script("gpu_wheels")
    files = {"bitsandbytes/__init__.py": b"x = 1\n", "bitsandbytes/libbitsandbytes_cpu.so": b"cpu",
             "bitsandbytes/libbitsandbytes_cuda130.so": b"130" * 10, "bitsandbytes/libbitsandbytes_cuda128.so": b"128",
             "bitsandbytes/libbitsandbytes_rocm64.so": b"rocm", "bitsandbytes-0.50.2.dist-info/METADATA": b"m"}
    src = tmp_path / "in" / "bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl"
    src.parent.mkdir()
    _wheel(src, files)
    out = gw.trim(src, "cuda130", tmp_path / "out")
    with zipfile.ZipFile(out) as z:
        names = set(z.namelist())
        record = z.read("bitsandbytes-0.50.2.dist-info/RECORD").decode().splitlines()
        assert {"bitsandbytes/libbitsandbytes_cpu.so", "bitsandbytes/libbitsandbytes_cuda130.so"} <= names
        assert not {"bitsandbytes/libbitsandbytes_cuda128.so", "bitsandbytes/libbitsandbytes_rocm64.so"} & names
        for line in record[:-1]:
            name, digest, size = line.split(",")
            data = z.read(name)
            assert int(size) == len(data)
            assert digest == "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        assert len(record) == len(names)
    with pytest.raises(SystemExit, match="no libbitsandbytes_cuda999"):
        gw.trim(src, "cuda999", tmp_path / "none")


def test_audit_names_what_the_gpu_machine_lacks(tmp_path):
    gw = _script("gpu_wheels")
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "lm_eval-0.4.13-py3-none-any.whl").write_bytes(b"")
    dry = tmp_path / "dry.json"
    dry.write_text(json.dumps({"imported_distributions": ["torch", "lm_eval", "PyYAML", "hqq", "autoqra"]}))
    assert gw.audit(dry, tmp_path / "w") == ["hqq"]


def test_dry_run_trains_on_the_micro_model(tmp_path, monkeypatch):
    monkeypatch.delenv("OUT", raising=False)
    out = tmp_path / "dry.json"
    assert _script("gpu_check").main(["--device", "cpu", "--dry", "--only", "train", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert not r["errors"] and r["sections"]["load"]["keep_dense"] is False
    train = {row["method"]: row for row in r["sections"]["train"]}
    assert set(train) == {"lora16", "nf4", "mixed_hqq", "mixed_paper"}
    assert train["mixed_paper"]["quantizers"] == "hqq+nf4+int8"
    assert all(row["tokens_per_s"] > 0 and abs(row["measured_over_predicted"] - 1) <= 0.15 for row in train.values())
    assert r["summary"]["peak_within_15pct"] and "bitsandbytes" in r["imported_distributions"]
