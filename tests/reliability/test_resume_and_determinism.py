"""The whole micro pipeline run a second time from scratch (its own cache), killed with SIGKILL at
several points and resumed: no partial result file is ever visible, no finished evaluation is
recomputed, and every plan, record and score equals those of the uninterrupted first run (timing
fields aside), which is also the check that two runs with the same seed are identical."""

import csv
import hashlib
import io
import json
import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from workflow_runner import MICRO, OFFLINE, snakemake, snakemake_cmd

pytestmark = pytest.mark.reliability

# Fields that measure the machine or how the run went, not the result: wall times and device hours,
# throughput, cache hits and trainings paid (which search first evaluates a shared plan depends on
# scheduling, and a resumed job finds its finished evaluations cached), manifest timestamps, hosts.
VOLATILE = re.compile(r"(seconds|hours|_time|time_|^time$|^timings$|elapsed|tokens_per_s|per_second|throughput|"
                      r"^cached$|^shared_from$|^quant_cache$|^fresh_|^trained$|^trained_|^created|^date|^host|hostname|^pid$|^git$|^git_|^cwd$|"
                      r"^python_executable$|^start|^end$|^finished|^duration|^total_evaluation_time)")
# Whole files that record how a run went rather than what it produced: logs, timings, and the shared-run
# store (cache/runs: which method's job computed an identical plan's run first depends on scheduling;
# the copies every method gets under results/ are compared).
SKIP = re.compile(r"^(logs/|benchmarks/|cache/runs/)")


def _strip(obj, root: str):
    if isinstance(obj, dict):
        return {k: _strip(v, root) for k, v in obj.items() if not VOLATILE.search(str(k))}
    if isinstance(obj, list):
        return [_strip(v, root) for v in obj]
    if isinstance(obj, str):  # absolute paths inside the run directory differ per run
        return obj.replace(root, "<run>")
    return obj


def _table(text: str, delimiter: str):
    rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    if not rows:
        return rows
    keep = [i for i, name in enumerate(rows[0]) if not VOLATILE.search(name)]
    return [[r[i] for i in keep] for r in rows]


def normalised(path: Path, work: Path):
    """What a result file says, volatile fields removed."""
    suffix, root = path.suffix, str(work)
    if suffix == ".json":
        return _strip(json.loads(path.read_text()), root)
    if suffix == ".jsonl":
        return [_strip(json.loads(line), root) for line in path.read_text().splitlines() if line.strip()]
    if suffix in (".tsv", ".csv"):
        return _table(path.read_text(), "\t" if suffix == ".tsv" else ",")
    if suffix == ".safetensors":
        return hashlib.sha256(path.read_bytes()).hexdigest()
    return None  # figures, tokenizer and model binaries: compared through what they are made of


def result_files(work: Path) -> dict[str, Path]:
    root = work / "results"
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith(".") and not SKIP.match(str(p.relative_to(root)))}


def differences(a: Path, b: Path) -> list[str]:
    fa, fb = result_files(a), result_files(b)
    out = [f"only in one run: {sorted(set(fa) ^ set(fb))[:10]}"] if set(fa) != set(fb) else []
    for rel in sorted(set(fa) & set(fb)):
        na, nb = normalised(fa[rel], a), normalised(fb[rel], b)
        if na != nb:
            out.append(f"{rel}: {_first_difference(na, nb)}")
    return out


def _first_difference(x, y, where="") -> str:
    if isinstance(x, dict) and isinstance(y, dict):
        for k in sorted(set(x) | set(y)):
            if x.get(k) != y.get(k):
                return _first_difference(x.get(k), y.get(k), f"{where}.{k}")
    if isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
        for i, (u, v) in enumerate(zip(x, y, strict=True)):
            if u != v:
                return _first_difference(u, v, f"{where}[{i}]")
    return f"{where or '<file>'}: {str(x)[:120]} != {str(y)[:120]}"


def check_no_partial_files(work: Path) -> int:
    """Every visible JSON/JSONL/TSV/CSV under results/ parses completely; returns how many."""
    n = 0
    for rel, p in result_files(work).items():
        if p.suffix not in (".json", ".jsonl", ".tsv", ".csv"):
            continue
        text = p.read_text()
        if p.suffix == ".json":
            json.loads(text)
        elif p.suffix == ".jsonl":
            assert text == "" or text.endswith("\n"), f"{rel}: last line cut"
            [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            rows = list(csv.reader(io.StringIO(text), delimiter="\t" if p.suffix == ".tsv" else ","))
            assert all(len(r) == len(rows[0]) for r in rows), f"{rel}: ragged table"
        n += 1
    return n


def finished_evaluations(work: Path) -> dict[Path, tuple[int, str]]:
    """Evaluation records, Stage-0 results and quantized blocks on disk: (mtime, content hash) each."""
    cache = work / "results/cache"
    files = [p for sub in ("evals", "sensitivity", "quant") for p in (cache / sub).rglob("*")
             if p.is_file() and not p.name.startswith(".")] if cache.exists() else []
    return {p: (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest()) for p in files}


# (what is running at that moment, a file whose first appearance triggers the kill)
KILL_POINTS = [
    ("Stage 0 and the first searches start", "results/memory/micro/budget.json"),
    ("Stage 1 generation 0: some LF evaluations finished", "results/cache/evals/*/lf/*.json"),
    ("Stage 1 generation 1 under way", "results/search/micro/autoqra/g1/lf.json"),
    ("Stage 2 under way", "results/refine/micro/autoqra/t0/hf.json"),
    ("final fine-tuning under way", "results/finetune/micro/*/s0/train.json"),
    ("lm-eval under way", "results/lm_eval/micro/*/s0.json"),
    ("summary written, tables and figures being drawn", "results/summary/results.tsv"),
]


def _start(work: Path) -> subprocess.Popen:
    env = {**os.environ, **OFFLINE}
    return subprocess.Popen(snakemake_cmd(work, "--configfile", str(MICRO)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env, start_new_session=True)


def _wait_for_new(work: Path, pattern: str, proc: subprocess.Popen, timeout: float = 600) -> bool:
    before = set(work.glob(pattern))
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if set(work.glob(pattern)) - before:
            return True
        time.sleep(0.2)
    return False


def test_killed_at_many_points_resumes_to_the_same_results(tmp_path, micro_run):
    rng = random.Random(0)
    work = tmp_path
    done: dict[Path, tuple[int, str]] = {}
    kills = []
    proc = _start(work)
    for what, pattern in KILL_POINTS:
        if not _wait_for_new(work, pattern, proc):
            continue  # the run got past this point before the trigger was armed
        time.sleep(rng.uniform(0.0, 1.5))  # somewhere inside the jobs now running
        if proc.poll() is not None:
            break
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        kills.append(what)
        n = check_no_partial_files(work)
        assert n > 0
        done.update(finished_evaluations(work))
        assert snakemake(work, "--configfile", str(MICRO), "--unlock").returncode == 0
        proc = _start(work)
    assert proc.wait(timeout=900) == 0, "the resumed run failed"
    assert len(kills) >= 5, f"only {len(kills)} kills landed: {kills}"
    assert len(done) > 20
    for p, (mtime, sha) in done.items():
        assert p.exists() and p.stat().st_mtime_ns == mtime, f"{p} was recomputed after a kill"
        assert hashlib.sha256(p.read_bytes()).hexdigest() == sha
    dry = snakemake(work, "-n", "--configfile", str(MICRO))
    assert "Nothing to be done" in dry.stdout + dry.stderr
    # a second, independent run with the same seed (killed and resumed, most of it computed afresh)
    # equals the uninterrupted one: this is also the determinism check (a separate clean second run
    # cost CI one more micro pipeline and checked the same thing)
    assert len(result_files(work)) > 150
    diffs = differences(micro_run, work)
    assert not diffs, "\n".join(diffs[:30])
    print(f"kills survived: {len(kills)}: {kills}; finished evaluations kept: {len(done)}")
