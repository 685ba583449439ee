"""Bad instruction data given to the real workflow (data.source alpaca_file): the data_prepare job
fails with a message naming the file and the line (or item), and no split is written. A prepared
split corrupted afterwards is caught the same way when a stage reads it."""

import json
import re

import pytest
import yaml
from workflow_runner import MICRO, snakemake

pytestmark = pytest.mark.reliability

GOOD = [{"instruction": f"Repeat the number {i}.", "input": "", "output": str(i)} for i in range(12)]


def _jsonl(records) -> bytes:
    return ("\n".join(json.dumps(r) for r in records) + "\n").encode()


CASES = {
    "malformed_json": (_jsonl(GOOD[:4]) + b'{"instruction": "x", "output": \n' + _jsonl(GOOD[4:]),
                       r"line 5: invalid JSON"),
    "missing_field": (_jsonl(GOOD[:6] + [{"instruction": "no output here"}] + GOOD[6:]),
                      r"line 7: missing required field 'output'"),
    "wrong_type": (_jsonl(GOOD[:2] + [{"instruction": "x", "output": 3}] + GOOD[2:]),
                   r"line 3: field 'output' must be a string"),
    "empty_field": (_jsonl(GOOD[:9] + [{"instruction": "  ", "output": "y"}] + GOOD[9:]),
                    r"line 10: field 'instruction' is empty"),
    "not_an_object": (_jsonl(GOOD[:3]) + b"[1, 2, 3]\n" + _jsonl(GOOD[3:]), r"line 4: expected a JSON object"),
    "non_utf8": (_jsonl(GOOD[:8]) + b'{"instruction": "caf\xe9", "output": "y"}\n', r"line 9: invalid UTF-8"),
    "empty_file": (b"\n\n", r"file is empty"),
    "splits_cannot_be_filled": (_jsonl(GOOD[:5]), r"5 unique records, but the splits need 7"),
}


def data_config(tmp_path, path):
    cfg = yaml.safe_load(MICRO.read_text())
    cfg["data"] = {"name": "user", "source": "alpaca_file", "path": str(path), "n_train": None,
                   "n_val": 3, "n_test": 3, "max_seq_len": 96}
    out = tmp_path / "config.yaml"
    out.write_text(yaml.safe_dump(cfg))
    return out


def output_and_log(res, work) -> str:
    log = work / "results/logs/data_prepare/user.log"
    return res.stdout + res.stderr + (log.read_text(errors="replace") if log.exists() else "")


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_dataset_file_names_file_and_line(tmp_path, case):
    content, expect = CASES[case]
    data = tmp_path / f"{case}.jsonl"
    data.write_bytes(content)
    res = snakemake(tmp_path, "results/data/user/train.jsonl", "--configfile", str(data_config(tmp_path, data)))
    out = output_and_log(res, tmp_path)
    assert res.returncode != 0
    assert re.search(re.escape(str(data)) + r".*" + expect, out), out[-3000:]
    assert not list((tmp_path / "results/data/user").glob("*.jsonl")), "a split was written"


def test_good_file_prepares_and_a_corrupted_split_is_named(tmp_path):
    """The control: the same file without faults prepares. Corrupting a prepared split afterwards
    (a truncated copy) is reported with file and line by the stage that reads it."""
    from autoqra.data import load_split
    from autoqra.errors import DatasetError

    data = tmp_path / "good.jsonl"
    data.write_bytes(_jsonl(GOOD))
    res = snakemake(tmp_path, "results/data/user/train.jsonl", "--configfile", str(data_config(tmp_path, data)))
    assert res.returncode == 0, output_and_log(res, tmp_path)[-3000:]
    split_dir = tmp_path / "results/data/user"
    assert [len(load_split(split_dir, s)) for s in ("train", "validation", "test")] == [6, 3, 3]
    val = split_dir / "validation.jsonl"
    lines = val.read_text().splitlines()
    val.write_text("\n".join(lines[:2] + [lines[2][: len(lines[2]) // 2]]) + "\n")
    with pytest.raises(DatasetError, match=re.escape(str(val)) + r": line 3: invalid JSON"):
        load_split(split_dir, "validation")
