"""Bundled, deterministic synthetic instruction dataset with short checkable answers.

Each skill uses a few fixed phrasings and one-token-ish answers (a number, a word, yes/no) so a
135M model can learn it in minutes, and exact match is a meaningful score. Every record also
carries four choices for multiple-choice (log-likelihood) evaluation.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from autoqra.data.template import format_prompt

SKILLS: tuple[str, ...] = ("arithmetic", "comparison", "string", "unit_conversion", "logic", "sorting")
SPLITS: tuple[str, ...] = ("train", "validation", "test")

# An item before choices are attached: (instruction, input, answer, distractor candidates).
Item = tuple[str, str, str, list[str]]

WORDS = (
    "apple bread chair dance eagle flame grape house input juice knife lemon money night ocean "
    "paper queen river stone table uncle voice water yellow zebra actor beach cloud dream earth "
    "field glass heart island jacket kitten light music north orange plant quiet robot sugar "
    "tiger urban value winter youth basket candle doctor engine forest garden hammer insect "
    "jungle kettle ladder market needle office pencil rabbit silver tunnel velvet window bottle "
    "camera dinner finger guitar helmet jelly letter mirror number parrot pocket rocket saddle "
    "turtle violin wallet arrow bench coral drum feather ghost honey iron jewel kite magnet "
    "nest owl piano ring shell tent vase wheel yarn cable desk fox gift hill lamp mouse nail "
    "oven pearl road sock train wolf bridge circle flower planet spoon cotton puzzle carpet "
    "button butter cookie dragon family friend summer spring autumn school travel circus "
    "marble salad tomato potato carrot pepper melon cherry banana mango walnut peanut muffin "
    "blanket pillow lantern compass anchor harbor castle temple statue painter farmer sailor"
).split()
NOUNS = "wug blicket dax fep zorp tove glim snark mib quill vorp nib lerk gorp tazz".split()
PROPERTIES = "red blue green round soft loud fast tall small warm cold shiny heavy quiet".split()
NAMES = "Ana Ben Cara Dan Eva Finn Gus Hana Ivan Jo Kim Leo Mia Nils Omar Pia Rui Sara Tom Uma".split()
LETTERS = "abcdefghijklmnopqrstuvwxyz"

BOOL_CHOICES = ["true", "false", "unknown", "both"]
YESNO_CHOICES = ["yes", "no", "maybe", "sometimes"]


def _near(ans: int, steps: Sequence[int]) -> list[str]:
    """Numeric distractors: the answer shifted by ``steps``, kept non-negative."""
    return [str(ans + s) for s in steps if ans + s >= 0 and s != 0]


def _arithmetic(rng: random.Random) -> Item:
    op = rng.choice(("add", "sub", "mul"))
    if op == "add":
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        ans, word, sym, verb = a + b, "plus", "+", "Add the two numbers."
    elif op == "sub":
        a = rng.randint(1, 99)
        b = rng.randint(0, a)  # non-negative results keep answers short and unambiguous
        ans, word, sym, verb = a - b, "minus", "-", "Subtract the second number from the first."
    else:
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        ans, word, sym, verb = a * b, "times", "*", "Multiply the two numbers."
    instruction, inp = rng.choice([
        (f"What is {a} {word} {b}?", ""),
        (f"Compute {a} {sym} {b}.", ""),
        ("Calculate the result.", f"{a} {sym} {b}"),
        (verb, f"{a} and {b}"),
    ])
    steps = (a, -a, b, -b, 1, -1) if op == "mul" else (1, -1, 2, -2, 10, -10)
    return instruction, inp, str(ans), _near(ans, steps)


def _comparison(rng: random.Random) -> Item:
    largest = rng.random() < 0.5
    word = "larger" if largest else "smaller"
    if rng.random() < 0.5:
        a, b = rng.sample(range(100), 2)
        ans, other = (max(a, b), min(a, b)) if largest else (min(a, b), max(a, b))
        instruction, inp = rng.choice([
            (f"Which number is {word}: {a} or {b}?", ""),
            (f"Which is {word}, {a} or {b}?", ""),
            (f"Return the {word} of the two numbers.", f"{a}, {b}"),
        ])
        return instruction, inp, str(ans), [str(other)] + _near(ans, (1, -1, 2, -2, 3))
    nums = rng.sample(range(100), rng.randint(4, 6))
    ans = max(nums) if largest else min(nums)
    sup = "largest" if largest else "smallest"
    listed = ", ".join(map(str, nums))
    instruction, inp = rng.choice([
        (f"What is the {sup} number in the list?", listed),
        (f"Find the {sup} number.", listed),
        (f"Which is the {sup}: {listed}?", ""),
    ])
    return instruction, inp, str(ans), [str(n) for n in nums if n != ans]


def _string(rng: random.Random) -> Item:
    w = rng.choice(WORDS)
    op = rng.choice(("reverse", "upper", "count", "first", "last", "occurrences"))
    if op == "reverse":
        ans = w[::-1]
        wrong = [w, w[1:][::-1] + w[0], ans[1:] + ans[0], ans[:-2] + ans[-1] + ans[-2]]
        phr = [(f"Reverse the word '{w}'.", ""), ("Write the word backwards.", w),
               (f"Spell '{w}' backwards.", "")]
    elif op == "upper":
        ans = w.upper()
        wrong = [w, w.capitalize(), ans[:-1] + w[-1], ans[:-1]]
        phr = [(f"Convert '{w}' to uppercase.", ""), ("Write the word in capital letters.", w)]
    elif op == "count":
        ans = str(len(w))
        wrong = _near(len(w), (1, -1, 2, -2, 3))
        phr = [(f"How many letters are in the word '{w}'?", ""), ("Count the letters in the word.", w)]
    elif op in ("first", "last"):
        ans = w[0] if op == "first" else w[-1]
        wrong = [c for c in dict.fromkeys(w) if c != ans] + rng.sample(LETTERS, 6)
        phr = [(f"What is the {op} letter of '{w}'?", ""), (f"Give the {op} letter of the word.", w)]
    else:
        c = rng.choice(w) if rng.random() < 0.8 else rng.choice(LETTERS)
        ans = str(w.count(c))
        wrong = _near(w.count(c), (1, -1, 2, 3))
        phr = [(f"How many times does the letter '{c}' appear in '{w}'?", ""),
               (f"Count the letter '{c}' in the word.", w)]
    instruction, inp = rng.choice(phr)
    return instruction, inp, ans, wrong


# (from unit, to unit, factor, plausible wrong factors); conversions go both ways.
_UNITS = (
    ("kilometers", "meters", 1000, (100, 10, 10000)),
    ("hours", "minutes", 60, (100, 30, 600)),
    ("kilograms", "grams", 1000, (100, 10, 10000)),
    ("minutes", "seconds", 60, (100, 30, 600)),
    ("meters", "centimeters", 100, (10, 1000, 60)),
    ("days", "hours", 24, (60, 12, 100)),
    ("liters", "milliliters", 1000, (100, 10, 10000)),
)


def _unit_conversion(rng: random.Random) -> Item:
    big, small, factor, wrong_factors = rng.choice(_UNITS)
    x = rng.randint(1, 99)
    if rng.random() < 0.5:
        src, dst, qty, ans = big, small, x, x * factor
        wrong = [str(x * f) for f in wrong_factors] + [str(ans + factor), str(ans - factor)]
    else:
        src, dst, qty, ans = small, big, x * factor, x
        wrong = [str(qty // f) for f in wrong_factors if qty % f == 0] + _near(x, (1, -1, 2))
    instruction, inp = rng.choice([
        (f"Convert {qty} {src} to {dst}.", ""),
        (f"How many {dst} are in {qty} {src}?", ""),
        (f"Convert the quantity to {dst}.", f"{qty} {src}"),
    ])
    return instruction, inp, str(ans), wrong


def _logic(rng: random.Random) -> Item:
    if rng.random() < 0.5:
        vals = [rng.random() < 0.5 for _ in range(3)]
        negs = [rng.random() < 0.3 for _ in range(3)]
        ops = [rng.choice(("AND", "OR")) for _ in range(2)]
        terms = [("NOT " if n else "") + str(v).lower() for v, n in zip(vals, negs, strict=True)]
        eff = [v != n for v, n in zip(vals, negs, strict=True)]
        if rng.random() < 0.5:  # two operands
            expr, res = f"{terms[0]} {ops[0]} {terms[1]}", _apply(ops[0], eff[0], eff[1])
        else:  # parenthesised so precedence never matters
            expr = f"({terms[0]} {ops[0]} {terms[1]}) {ops[1]} {terms[2]}"
            res = _apply(ops[1], _apply(ops[0], eff[0], eff[1]), eff[2])
        instruction, inp = rng.choice([
            (f"What is {expr}?", ""), ("Evaluate the boolean expression.", expr),
        ])
        ans = str(res).lower()
        return instruction, inp, ans, [c for c in BOOL_CHOICES if c != ans]
    noun, prop, name = rng.choice(NOUNS), rng.choice(PROPERTIES), rng.choice(NAMES)
    positive = rng.random() < 0.5
    quant = "All" if positive else "No"
    text = f"{quant} {noun}s are {prop}. {name} is a {noun}. Is {name} {prop}?"
    instruction, inp = rng.choice([(text, ""), ("Answer yes or no.", text)])
    ans = "yes" if positive else "no"
    return instruction, inp, ans, [c for c in YESNO_CHOICES if c != ans]


def _apply(op: str, a: bool, b: bool) -> bool:
    return (a and b) if op == "AND" else (a or b)


def _sorting(rng: random.Random) -> Item:
    nums = rng.sample(range(100), 3)
    desc = rng.random() < 0.5
    order = "descending" if desc else "ascending"
    ans = ", ".join(map(str, sorted(nums, reverse=desc)))
    instruction, inp = rng.choice([
        (f"Sort the numbers in {order} order.", ", ".join(map(str, nums))),
        (f"Sort {', '.join(map(str, nums))} in {order} order.", ""),
    ])
    a, b, c = nums
    perms = [(a, b, c), (a, c, b), (b, a, c), (b, c, a), (c, a, b), (c, b, a)]
    return instruction, inp, ans, [", ".join(map(str, p)) for p in perms]


GENERATORS: dict[str, Callable[[random.Random], Item]] = {
    "arithmetic": _arithmetic, "comparison": _comparison, "string": _string,
    "unit_conversion": _unit_conversion, "logic": _logic, "sorting": _sorting,
}


def _make_record(rng: random.Random, skill: str, item: Item, rid: str) -> dict:
    instruction, inp, ans, candidates = item
    distractors = [d for d in dict.fromkeys(candidates) if d != ans]
    if len(distractors) < 3:
        raise RuntimeError(f"skill {skill!r}: fewer than 3 distractors for {instruction!r}")
    choices = [ans] + rng.sample(distractors, 3)
    rng.shuffle(choices)
    return {"id": rid, "skill": skill, "instruction": instruction, "input": inp, "output": ans,
            "answer": ans, "choices": choices, "label": choices.index(ans)}


def check_skills(skills: Sequence[str] | None) -> tuple[str, ...]:
    """Validate skill names (None means all); raise ValueError naming an unknown one."""
    if skills is None:
        return SKILLS
    if isinstance(skills, str) or not skills:
        raise ValueError(f"skills must be a non-empty list of names from {list(SKILLS)}, got {skills!r}")
    for s in skills:
        if s not in GENERATORS:
            raise ValueError(f"unknown synthetic skill {s!r}; expected one of {list(SKILLS)}")
    return tuple(dict.fromkeys(skills))


def generate_synthetic(seed: int, n_train: int, n_val: int, n_test: int,
                       skills: Sequence[str] | None = None) -> dict[str, list[dict]]:
    """Deterministic train/validation/test splits, skills balanced, no (instruction, input) shared."""
    names = check_skills(skills)
    rng = random.Random(seed)
    seen: set[tuple[str, str]] = set()  # shared across splits: held-out items never leak
    out: dict[str, list[dict]] = {}
    for split, n in zip(SPLITS, (n_train, n_val, n_test), strict=True):
        if n < 0:
            raise ValueError(f"size of split {split!r} must be >= 0, got {n}")
        plan = [names[i % len(names)] for i in range(n)]
        rng.shuffle(plan)
        records = []
        for i, skill in enumerate(plan):
            for _ in range(1000):
                item = GENERATORS[skill](rng)
                if (item[0], item[1]) not in seen:
                    break
            else:
                raise ValueError(f"skill {skill!r} ran out of unique examples at {split} record {i}; "
                                 "request fewer records")
            seen.add((item[0], item[1]))
            records.append(_make_record(rng, skill, item, f"{split}-{i}"))
        out[split] = records
    return out


_SUBJECTS = "the farmer|a small robot|my friend|the old teacher|a tired sailor|the tiger".split("|")
_VERBS = "opened|painted|found|carried|counted|cleaned|watched|sold".split("|")


def tokenizer_corpus(seed: int, n: int = 2000) -> list[str]:
    """Deterministic texts (rendered synthetic examples and plain sentences) to train a tokenizer."""
    rng = random.Random(seed + 7919)  # decorrelated from the dataset drawn with the same seed
    n_examples = n - n // 4
    data = generate_synthetic(seed, n_examples, 0, 0)["train"]
    texts = [format_prompt(r) + r["output"] for r in data]
    for _ in range(n - n_examples):
        obj = f"{rng.choice(PROPERTIES)} {rng.choice(WORDS)}"
        texts.append(f"{rng.choice(_SUBJECTS).capitalize()} {rng.choice(_VERBS)} "
                     f"{rng.randint(2, 99)} {obj}s in the {rng.choice(WORDS)}.")
    rng.shuffle(texts)
    return texts
