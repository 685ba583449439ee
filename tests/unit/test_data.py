"""Tests of autoqra.data: synthetic generator, loaders, template/tokenization, prepare stage."""

from __future__ import annotations

import json
import re

import pytest

from autoqra.data import (
    IGNORE_INDEX,
    SKILLS,
    collate,
    format_example,
    format_prompt,
    generate_synthetic,
    load_alpaca,
    load_hub,
    load_jsonl,
    load_split,
    prepare_data,
    tokenize_example,
    tokenizer_corpus,
)
from autoqra.data.prepare import sha256_file
from autoqra.errors import ConfigError, DatasetError

# ---------------------------------------------------------------- synthetic generator


def _key(r: dict) -> tuple[str, str]:
    return r["instruction"], r["input"]


def _expected(r: dict) -> str:
    """Recompute a synthetic record's answer from its text, independently of the generator."""
    text = f"{r['instruction']} {r['input']}"
    nums = [int(n) for n in re.findall(r"\d+", text)]
    quoted = re.findall(r"'([a-z]+)'", text)
    skill = r["skill"]
    if skill == "arithmetic":
        a, b = nums
        if "plus" in text or "+" in text or "Add" in text:
            return str(a + b)
        if "minus" in text or " - " in text or "Subtract" in text:
            return str(a - b)
        assert "times" in text or "*" in text or "Multiply" in text, text
        return str(a * b)
    if skill == "comparison":
        return str(max(nums) if ("larger" in text or "largest" in text) else min(nums))
    if skill == "sorting":
        return ", ".join(map(str, sorted(nums, reverse="descending" in text)))
    if skill == "unit_conversion":
        factors = {("kilometers", "meters"): 1000, ("hours", "minutes"): 60,
                   ("kilograms", "grams"): 1000, ("minutes", "seconds"): 60,
                   ("meters", "centimeters"): 100, ("days", "hours"): 24,
                   ("liters", "milliliters"): 1000}
        (qty,) = nums
        src = re.search(r"\d+ (\w+)", text).group(1)
        dst = re.search(r"(?:to|How many) (\w+)", text).group(1)
        if (src, dst) in factors:
            return str(qty * factors[src, dst])
        return str(qty // factors[dst, src])
    if skill == "logic":
        if "Is " in text:
            return "yes" if text.split()[0] == "All" or "All " in text else "no"
        expr = r["input"] or r["instruction"].removeprefix("What is ").removesuffix("?")
        py = expr.replace("AND", "and").replace("OR", "or").replace("NOT", "not")
        return str(eval(py.replace("true", "True").replace("false", "False"))).lower()
    assert skill == "string"
    word = r["input"] or quoted[-1]
    if "backwards" in text or "Reverse" in text:
        return word[::-1]
    if "uppercase" in text or "capital" in text:
        return word.upper()
    if "letter '" in text:
        return str(word.count(quoted[0]))
    if "How many letters" in text or "Count the letters" in text:
        return str(len(word))
    return word[0] if "first" in text else word[-1]


def test_same_seed_identical_different_seed_differs():
    a = generate_synthetic(3, 60, 12, 12)
    assert a == generate_synthetic(3, 60, 12, 12)
    b = generate_synthetic(4, 60, 12, 12)
    assert [_key(r) for r in a["train"]] != [_key(r) for r in b["train"]]


def test_split_sizes_balanced_skills_and_ids():
    data = generate_synthetic(0, 120, 30, 36)
    assert {k: len(v) for k, v in data.items()} == {"train": 120, "validation": 30, "test": 36}
    counts = {s: sum(r["skill"] == s for r in data["train"]) for s in SKILLS}
    assert counts == {s: 120 // len(SKILLS) for s in SKILLS}
    assert [r["id"] for r in data["test"]] == [f"test-{i}" for i in range(36)]


def test_no_leakage_between_splits():
    data = generate_synthetic(1, 3000, 300, 300)
    train = {_key(r) for r in data["train"]}
    val, test = {_key(r) for r in data["validation"]}, {_key(r) for r in data["test"]}
    assert len(train) == 3000 and len(val) == 300 and len(test) == 300  # unique within splits
    assert not train & test and not train & val and not val & test


def test_choices_hold_the_answer_at_label():
    data = generate_synthetic(2, 600, 0, 0)["train"]
    for r in data:
        assert len(r["choices"]) == 4 and len(set(r["choices"])) == 4, r
        assert r["choices"][r["label"]] == r["answer"] == r["output"], r
    # The answer's position is shuffled, not always first.
    assert {r["label"] for r in data} == {0, 1, 2, 3}


def test_answers_are_correct_for_every_skill():
    data = generate_synthetic(5, 1200, 0, 0)["train"]
    assert {r["skill"] for r in data} == set(SKILLS)
    for r in data:
        assert r["answer"] == _expected(r), r


def test_skill_subset_and_unknown_skill():
    data = generate_synthetic(0, 20, 4, 4, skills=["arithmetic", "logic"])
    assert {r["skill"] for split in data.values() for r in split} == {"arithmetic", "logic"}
    with pytest.raises(ValueError, match="'juggling'"):
        generate_synthetic(0, 10, 0, 0, skills=["arithmetic", "juggling"])


def test_tokenizer_corpus_deterministic():
    corpus = tokenizer_corpus(0, 100)
    assert len(corpus) == 100 and corpus == tokenizer_corpus(0, 100)
    assert any("### Response:\n" in t for t in corpus) and corpus != tokenizer_corpus(1, 100)


# ---------------------------------------------------------------- loaders


def _write(path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


GOOD = json.dumps({"instruction": "Say hi.", "output": "hi"})


def test_load_jsonl_ok_and_blank_lines(tmp_path):
    p = _write(tmp_path / "d.jsonl", [GOOD, "", GOOD])
    assert load_jsonl(p, required=("instruction", "output")) == [json.loads(GOOD)] * 2


@pytest.mark.parametrize("lines, expected", [
    ([GOOD, GOOD, '{"instruction": "x", "output": '], "line 3: invalid JSON"),
    ([GOOD, json.dumps({"instruction": "x"})], "line 2: missing required field 'output'"),
    ([GOOD, json.dumps({"instruction": " ", "output": "y"})], "line 2: field 'instruction' is empty"),
    ([json.dumps({"instruction": "x", "output": 5})], "line 1: field 'output' must be a string"),
    ([GOOD, "[1, 2]"], "line 2: expected a JSON object"),
    ([json.dumps({"instruction": "x", "output": "y", "choices": ["a"], "label": 3})], "'label'"),
])
def test_load_jsonl_errors_name_file_and_line(tmp_path, lines, expected):
    p = _write(tmp_path / "bad_data.jsonl", lines)
    with pytest.raises(DatasetError, match=re.escape(expected)) as err:
        load_jsonl(p, required=("instruction", "output"))
    assert "bad_data.jsonl" in str(err.value)


def test_load_jsonl_empty_missing_and_non_utf8(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    with pytest.raises(DatasetError, match="empty.jsonl: file is empty"):
        load_jsonl(empty)
    with pytest.raises(DatasetError, match="not found"):
        load_jsonl(tmp_path / "nope.jsonl")
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(GOOD.encode() + b'\n{"instruction": "caf\xe9", "output": "y"}\n')
    with pytest.raises(DatasetError, match=r"latin\.jsonl: line 2: invalid UTF-8"):
        load_jsonl(latin)


def test_load_alpaca_json_list_and_jsonl(tmp_path):
    items = [{"instruction": "Add.", "input": "1 and 2", "output": "3"},
             {"instruction": "Say hi.", "output": "hi"}]
    p = tmp_path / "alpaca.json"
    p.write_text(json.dumps(items, indent=2))
    expected = [{**items[0]}, {**items[1], "input": ""}]
    assert load_alpaca(p) == expected
    assert load_alpaca(_write(tmp_path / "alpaca.jsonl", [json.dumps(i) for i in items])) == expected


def test_load_alpaca_errors(tmp_path):
    p = tmp_path / "alp.json"
    p.write_text(json.dumps([{"instruction": "a", "output": "b"}, {"output": "b"}]))
    with pytest.raises(DatasetError, match=r"alp\.json: item 1: missing required field 'instruction'"):
        load_alpaca(p)
    p.write_text('[\n  {"instruction": "a",\n   "output": }\n]')
    with pytest.raises(DatasetError, match=r"alp\.json: line 3: invalid JSON"):
        load_alpaca(p)
    p.write_text(json.dumps([{"instruction": "a", "input": None, "output": "b"}]))
    with pytest.raises(DatasetError, match="item 0: field 'input' must be a string"):
        load_alpaca(p)
    p.write_text("[]")
    with pytest.raises(DatasetError, match="no records"):
        load_alpaca(p)


def test_load_hub_offline_fails_clearly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets.config  # the flag is read at import; patch it in case it was imported earlier

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    with pytest.raises(DatasetError, match="autoqra-test/no-such-dataset.*offline"):
        load_hub("autoqra-test/no-such-dataset")


# ---------------------------------------------------------------- template and tokenization


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(tokenizer_corpus(0, 200), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")


REC = {"instruction": "What is 12 plus 30?", "input": "", "output": "42"}


def test_format_prompt_with_and_without_input():
    assert format_prompt(REC) == "### Instruction:\nWhat is 12 plus 30?\n\n### Response:\n"
    with_input = {"instruction": "Add the two numbers.", "input": "1 and 2", "output": "3"}
    prompt, response = format_example(with_input)
    assert prompt == ("### Instruction:\nAdd the two numbers.\n\n### Input:\n1 and 2\n\n"
                      "### Response:\n") and response == "3"


def test_tokenize_example_masks_prompt(tokenizer):
    ex = tokenize_example(tokenizer, REC, max_len=256)
    prompt_ids = tokenizer(format_prompt(REC))["input_ids"]
    n = len(prompt_ids)
    assert ex["input_ids"][:n] == prompt_ids
    assert ex["labels"][:n] == [IGNORE_INDEX] * n
    supervised = ex["labels"][n:]
    assert supervised == ex["input_ids"][n:] and supervised[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(supervised[:-1]) == "42"


def test_truncation_keeps_prompt_start_and_a_supervised_token(tokenizer):
    full = tokenize_example(tokenizer, REC, max_len=256)
    n_prompt = full["labels"].count(IGNORE_INDEX)
    cut = tokenize_example(tokenizer, REC, max_len=n_prompt + 1)  # response cut to one token
    assert cut["input_ids"] == full["input_ids"][: n_prompt + 1]
    assert sum(label != IGNORE_INDEX for label in cut["labels"]) == 1
    for max_len in (2, 5, n_prompt):  # prompt alone fills the window: cut the prompt from the left
        ex = tokenize_example(tokenizer, REC, max_len=max_len)
        assert len(ex["input_ids"]) == len(ex["labels"]) == max_len
        kept = [i for i, label in enumerate(ex["labels"]) if label != IGNORE_INDEX]
        assert kept and kept[0] >= 1  # at least one prompt token precedes the supervised ones
        assert ex["input_ids"][kept[0]] == full["input_ids"][n_prompt]
    with pytest.raises(ValueError, match="max_len"):
        tokenize_example(tokenizer, REC, max_len=1)


def test_collate_right_pads(tokenizer):
    a = tokenize_example(tokenizer, REC, max_len=256)
    b = tokenize_example(tokenizer, {**REC, "instruction": "Hi?", "output": "yes"}, max_len=256)
    pad = tokenizer.pad_token_id
    batch = collate([a, b], pad_id=pad)
    width = max(len(a["input_ids"]), len(b["input_ids"]))
    assert batch["input_ids"].shape == batch["labels"].shape == (2, width)
    nb = len(b["input_ids"])
    assert batch["input_ids"][1].tolist() == b["input_ids"] + [pad] * (width - nb)
    assert batch["labels"][1].tolist() == b["labels"] + [IGNORE_INDEX] * (width - nb)
    assert batch["attention_mask"].sum(dim=1).tolist() == [len(a["input_ids"]), nb]


# ---------------------------------------------------------------- prepare stage


def test_prepare_synthetic_writes_files_and_manifest(tmp_path):
    spec = {"source": "synthetic", "n_train": 60, "n_val": 12, "n_test": 18, "skills": None}
    manifest = prepare_data(spec, tmp_path, seed=7)
    assert manifest["stage"] == "data_prepare" and manifest["seed"] == 7
    assert manifest["counts"] == {"train": 60, "validation": 12, "test": 18}
    assert manifest["skills"]["train"] == {s: 10 for s in SKILLS}
    assert json.loads((tmp_path / "manifest.json").read_text())["counts"] == manifest["counts"]
    for split in ("train", "validation", "test"):
        assert manifest["files"][split]["sha256"] == sha256_file(tmp_path / f"{split}.jsonl")
    assert load_split(tmp_path, "test") == generate_synthetic(7, 60, 12, 18)["test"]
    with pytest.raises(ValueError, match="'dev'"):
        load_split(tmp_path, "dev")


def test_prepare_alpaca_file_splits_deterministically(tmp_path):
    items = [{"instruction": f"Say {i}.", "output": f"{i}"} for i in range(30)]
    items.append(dict(items[0]))  # a duplicate must not land in two splits
    src = tmp_path / "alpaca.json"
    src.write_text(json.dumps(items))
    spec = {"source": "alpaca_file", "path": str(src), "n_train": None, "n_val": 4, "n_test": 6}
    manifest = prepare_data(spec, tmp_path / "a", seed=1)
    assert manifest["counts"] == {"train": 20, "validation": 4, "test": 6}
    assert manifest["inputs"]["sha256"] == sha256_file(src)
    train, test = load_split(tmp_path / "a", "train"), load_split(tmp_path / "a", "test")
    assert not {_key(r) for r in train} & {_key(r) for r in test}
    assert all(r["answer"] == r["output"] and "choices" not in r for r in train + test)
    prepare_data(spec, tmp_path / "b", seed=1)
    assert (tmp_path / "a" / "test.jsonl").read_bytes() == (tmp_path / "b" / "test.jsonl").read_bytes()
    with pytest.raises(DatasetError, match="30 unique records"):
        prepare_data({**spec, "n_train": 25}, tmp_path / "c", seed=1)


def test_prepare_rejects_bad_spec(tmp_path):
    with pytest.raises(ConfigError, match="data.source"):
        prepare_data({"source": "ftp", "n_train": 1, "n_val": 1, "n_test": 1}, tmp_path, seed=0)
    with pytest.raises(ConfigError, match="data.skills.*'poetry'"):
        prepare_data({"source": "synthetic", "n_train": 6, "n_val": 0, "n_test": 0,
                      "skills": ["poetry"]}, tmp_path, seed=0)
    with pytest.raises(ConfigError, match="data.n_val"):
        prepare_data({"source": "synthetic", "n_train": 6, "n_val": -1, "n_test": 0}, tmp_path, 0)
    with pytest.raises(ConfigError, match="data.path"):
        prepare_data({"source": "alpaca_file", "n_val": 1, "n_test": 1}, tmp_path, seed=0)
