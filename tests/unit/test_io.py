"""Atomic writes: a reader never sees a partial file or directory."""

import json
import os

import pytest

from autoqra.io import atomic_dir, atomic_write_json, read_jsonl


def test_atomic_dir_replaces_only_when_complete(tmp_path):
    out = tmp_path / "adapter"
    with atomic_dir(out) as tmp:
        (tmp / "a.json").write_text("{}")
        assert not out.exists()  # nothing visible while writing
    assert json.loads((out / "a.json").read_text()) == {}
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "a.json").write_text('{"half":')
        raise RuntimeError("killed mid-write")
    assert json.loads((out / "a.json").read_text()) == {}  # the old complete copy stays
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # no temp copy left behind
    with atomic_dir(out) as tmp:
        (tmp / "b.json").write_text("[]")
    assert sorted(p.name for p in out.iterdir()) == ["b.json"]


def test_atomic_dir_removes_what_a_killed_writer_left(tmp_path):
    out = tmp_path / "hf"
    for stale in (".hf.tmp-123", ".hf.old-456"):
        (tmp_path / stale).mkdir()
        (tmp_path / stale / "config.json").write_text('{"trunc')
    with atomic_dir(out) as tmp:
        (tmp / "config.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]
    assert oct((out / "config.json").stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def test_atomic_write_json_and_empty_jsonl(tmp_path):
    p = atomic_write_json(tmp_path / "x" / "r.json", {"b": 1, "a": [1.5]})
    assert p.read_text() == b'{\\n  "a": [\\n    1.5\\n  ],\\n  "b": 1\\n}\\n'.decode("unicode_escape")
    assert not [q for q in p.parent.iterdir() if q.name != "r.json"]
    (tmp_path / "e.jsonl").write_text("")
    assert read_jsonl(tmp_path / "e.jsonl") == []


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def test_code_sha_identifies_library_code():
    from autoqra.manifest import code_sha

    a = code_sha("models", "io.py")
    assert a == code_sha("models", "io.py") and len(a) == 16
    assert len({a, code_sha("data", "io.py"), code_sha("models"), code_sha("io.py")}) == 4
    with pytest.raises(FileNotFoundError, match="no_such_module.py"):
        code_sha("no_such_module.py")
