"""General English text, to check that fine-tuning a quantized plan keeps the model's general
language ability (the search sees one part, the lm-eval benchmark ``general_text`` the other).

Source ``python_docs`` (the default) is the English prose of CPython's documentation as shipped
with every Python (``pydoc_data.topics``: the language reference and library topics that
``help()`` shows), written by the Python documentation authors, not by this project, and
available offline everywhere. Only prose paragraphs are kept: unindented (no code blocks or
grammar rules), at least ``MIN_CHARS`` long, ending with a full stop and nearly all letters and
spaces. A plain-text file (paragraphs separated by blank lines) may be given instead.

The split is by a hash of each paragraph's text (not its position), so adding or removing a
paragraph in another Python version moves no other paragraph between the parts: ``search`` (what
the search's score may see) and ``heldout`` (the benchmark) never share a paragraph.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from autoqra.errors import ConfigError, DatasetError

SOURCES = ("python_docs",)  # or a path to a .txt file
PARTS = ("search", "heldout")
MIN_CHARS = 200
MIN_LETTER_FRACTION = 0.9
SALT = "autoqra-general-text"


def _prose(block: str) -> str | None:
    """One paragraph as a single line if it is prose, else None."""
    lines = block.split("\n")
    if any(line.startswith((" ", "\t")) for line in lines):
        return None  # code, grammar productions, indented lists
    text = " ".join(line.strip() for line in lines).strip()
    text = re.sub(r"\s+", " ", text)
    if len(text) < MIN_CHARS or not text.endswith("."):
        return None
    letters = sum(ch.isalpha() or ch == " " for ch in text) / len(text)
    return text if letters >= MIN_LETTER_FRACTION else None


def paragraphs_of(text: str) -> list[str]:
    """The prose paragraphs of a text (blocks separated by blank lines), in order, deduplicated."""
    out = [p for p in (_prose(b) for b in re.split(r"\n[ \t]*\n", text)) if p]
    return list(dict.fromkeys(out))


def load_paragraphs(source: str, base_dir: str | os.PathLike = ".") -> tuple[list[str], dict[str, Any]]:
    """Prose paragraphs of ``source`` and a description of where they came from."""
    if source == "python_docs":
        import platform
        from pydoc_data import topics

        paras = [p for key in sorted(topics.topics) for p in paragraphs_of(topics.topics[key])]
        origin = {"source": "python_docs", "module": "pydoc_data.topics", "python": platform.python_version()}
    else:
        path = Path(source).expanduser()
        path = path if path.is_absolute() else Path(base_dir) / path
        if not path.is_file():
            raise ConfigError(f"config key 'data.general_text.source': {source!r} is neither one of {list(SOURCES)} "
                              f"nor an existing text file")
        paras = paragraphs_of(path.read_text(encoding="utf-8"))
        origin = {"source": str(path)}
    paras = list(dict.fromkeys(paras))
    if len(paras) < 4:
        raise DatasetError(f"general text {source!r}: only {len(paras)} prose paragraphs (need at least 4)")
    return paras, origin


def part_of(paragraph: str, heldout_fraction: float) -> str:
    """``heldout`` or ``search``, from a hash of the paragraph's text (stable across versions)."""
    u = int(hashlib.sha256(f"{SALT}:{paragraph}".encode()).hexdigest()[:12], 16) / 16**12
    return "heldout" if u < heldout_fraction else "search"


def split_general(paragraphs: list[str], heldout_fraction: float = 0.3) -> dict[str, list[dict[str, str]]]:
    """The two disjoint parts as records ``{"id": "general-<part>-<i>", "text": ...}``."""
    if not 0.0 < heldout_fraction < 1.0:
        raise ConfigError(f"config key 'data.general_text.heldout_fraction': expected a number in (0, 1), "
                          f"got {heldout_fraction}")
    parts: dict[str, list[str]] = {p: [] for p in PARTS}
    for para in paragraphs:
        parts[part_of(para, heldout_fraction)].append(para)
    for name, paras in parts.items():
        if not paras:
            raise DatasetError(f"general text: the {name} part is empty ({len(paragraphs)} paragraphs, "
                               f"heldout_fraction {heldout_fraction})")
    return {name: [{"id": f"general-{name}-{i}", "text": t} for i, t in enumerate(paras)]
            for name, paras in parts.items()}


def general_parts(spec: Mapping[str, Any], base_dir: str | os.PathLike = ".") -> tuple[dict[str, list[dict]], dict]:
    """Both parts for a config entry ``data.general_text`` and the origin description."""
    paras, origin = load_paragraphs(spec.get("source", "python_docs"), base_dir)
    parts = split_general(paras, float(spec.get("heldout_fraction", 0.3)))
    return parts, {**origin, "paragraphs": len(paras), "counts": {k: len(v) for k, v in parts.items()}}


def load_general(path: str | os.PathLike) -> list[str]:
    """The texts of a prepared part file (``general_search.jsonl`` / ``general_heldout.jsonl``)."""
    from autoqra.data.loaders import load_jsonl

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: general-text file not found (run the data_prepare stage first)")
    return [r["text"] for r in load_jsonl(path, required=("id", "text"))]
