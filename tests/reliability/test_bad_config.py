"""Mutated configs given to the real workflow: each stops before the DAG is built (so before any
job), exits non-zero, names the key or file and what was expected, and leaves every file of an
existing run untouched."""

import re
from pathlib import Path

import pytest
import yaml
from workflow_runner import DELETE, MICRO, ROOT, mutated, snakemake

pytestmark = pytest.mark.reliability

# (config key path, new value, what the message must say)
CASES = [
    ("refine.q", "two", r"'refine.q': 'two' is not of type 'integer'"),
    ("serach", {"population": 4}, r"'<top level>': unknown key\(s\) \['serach'\]"),
    ("search.populaton", 4, r"'search': unknown key\(s\) \['populaton'\]"),
    ("search_space.bits", [], r"'search_space.bits': \[\] should be non-empty"),
    ("search_space.ranks", [], r"'search_space.ranks': \[\] should be non-empty"),
    ("search_space.bits", [2, 5], r"'search_space.bits.1': 5 is not allowed; expected one of \[2, 3, 4, 8, 16\]"),
    ("search_space.backend", "hqq", r"'search_space': unknown key\(s\) \['backend'\]; 'backend' was replaced by a "
                                    r"quantizer per bit-width: search_space.quantizers"),
    ("search_space.quantizers", {2: "nf4"}, r"'search_space.quantizers.2': quantizer 'nf4' cannot store 2-bit weights"),
    ("search_space.quantizers.8", "gptq", r"'search_space.quantizers.8': 'gptq' is not allowed; expected one of"),
    ("budget", {"type": "bytes", "value": 10}, r"'budget': 10 bytes in total.*below the smallest possible plan"),
    ("budget", {"type": "uniform", "bits": 2, "rank": 1}, r"'budget'.*below the smallest possible plan"),
    ("budget", {"type": "gb"}, r"'budget.value': required when budget.type is 'gb'"),
    ("refine.alpha", 1.5, r"'refine.alpha': 1.5 is greater than the maximum of 1"),
    ("refine.alpha", -0.1, r"'refine.alpha': -0.1 is less than the minimum of 0"),
    ("refine.min_radius", 4, r"'refine'.*min_radius <= init_radius <= max_radius"),
    ("search.population", 1, r"'search.population': 1 is less than the minimum of 2"),
    ("search.promote", 9, r"'search' \(variant 'autoqra'\).*promote=9 \(expected between 1 and the offspring"),
    ("search.shards", 0, r"'search.shards': 0 is less than the minimum of 1"),
    ("data", {"name": "x", "source": "alpaca_file", "path": "no/such/train.jsonl"},
     r"'data.path': file .*no/such/train.jsonl does not exist; expected an Alpaca-format"),
    ("models.micro", {"source": "hub", "id": "nobody/no-such-model-xyz"},
     r"'models.micro'.*'nobody/no-such-model-xyz' is not in the local Hugging Face cache and HF_HUB_OFFLINE"),
    ("models.micro", {"source": "local", "id": "/no/such/model"}, r"'models.micro'.*/no/such/model"),
    ("models.micro.micro.num_attention_heads", 5, r"'models.micro'.*divisible"),
    ("fidelities.lf", {}, r"'fidelities.lf': give either 'steps' or both 'data_fraction' and 'epochs'"),
    ("fidelities.hf.steps", 0, r"'fidelities.hf.steps': 0 is less than the minimum of 1"),
    ("methods.autoqra.variant", "nope", r"'methods.autoqra.variant': 'nope' is not a search variant"),
    ("methods.qlora_nf4.bits", 3, r"'methods.qlora_nf4.quantizer': quantizer 'nf4' cannot store 3-bit weights "
                                  r"\(it stores 4 bits\); methods.qlora_nf4.bits is 3"),
    ("methods.sequential.rank", DELETE, r"'methods.sequential': plan 'sequential' needs \['rank'\]"),
    ("lm_eval.tasks", ["arc_easy"], r"'lm_eval.tasks': \['arc_easy'\] are not offline tasks"),
    ("finetune", {"steps": 3, "epochs": 1}, r"'finetune': give either 'steps' or 'data_fraction' and 'epochs'"),
    ("training.lr", -1, r"'training.lr': -1 is less than or equal to the minimum of 0"),
    ("sensitivity.calib_source", "no_such.txt", r"'sensitivity.calib_source': no_such.txt is neither 'data'"),
    ("evaluation.inject_failure", {"kind": "segfault"}, r"'evaluation.inject_failure'"),
    ("job_threads", 0, r"'job_threads': 0 is less than the minimum of 1"),
    ("seed", "zero", r"'seed': 'zero' is not of type 'integer'"),
]


def mutate(path: str, value):
    return mutated(yaml.safe_load(MICRO.read_text()), path, value)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def existing_run(micro_run):
    """The complete micro run: every mutated config is run in it and must leave it as it was."""
    before = snapshot(micro_run / "results")
    assert len(before) > 100
    yield micro_run
    assert snapshot(micro_run / "results") == before, "a bad config modified files of the existing run"


def check_rejected(res, expect: str) -> None:
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-2000:]
    assert "Building DAG of jobs" not in out and "rule " not in res.stdout, "jobs were planned: " + out[-2000:]
    assert re.search(expect, out, flags=re.S), out[-2000:]


@pytest.mark.parametrize("path,value,expect", CASES, ids=[f"{c[0]}={c[1]!r}"[:60] for c in CASES])
def test_mutated_config_stops_before_any_job(existing_run, tmp_path, path, value, expect):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(mutate(path, value)))
    check_rejected(snakemake(existing_run, "--configfile", str(bad)), expect)


def test_several_errors_are_listed_at_once(existing_run, tmp_path):
    cfg = mutate("refine.q", "two")
    cfg["search"]["population"] = 1
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    res = snakemake(existing_run, "--configfile", str(tmp_path / "bad.yaml"))
    check_rejected(res, r"'refine.q'.*'search.population'")


@pytest.mark.parametrize("text,expect", [
    ("seed: [1\nmodels: {", r"Config file is not valid JSON or YAML"),
    ("- a\n- b\n", r"Config file must be given as JSON or YAML with keys at top level"),
])
def test_unparsable_config_file(existing_run, tmp_path, capsys, text, expect):
    """Snakemake parses --configfile itself (its message does not name the file); `autoqra
    check-config` names the file."""
    from autoqra.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    check_rejected(snakemake(existing_run, "--configfile", str(bad)), expect)
    assert main(["check-config", str(bad)]) == 2
    assert str(bad) in capsys.readouterr().err


def test_missing_config_file(existing_run, tmp_path):
    res = snakemake(existing_run, "--configfile", str(tmp_path / "nope.yaml"))
    check_rejected(res, r"No such file or directory: '.*nope.yaml'")


def test_check_config_names_file_and_line(tmp_path, capsys):
    from autoqra.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 0\nmodels: {\n  m: [\n")
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "invalid YAML" in err and "line" in err
    assert main(["check-config", str(ROOT / "config" / "micro.yaml"), "--base-dir", str(ROOT)]) == 0
