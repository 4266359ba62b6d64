"""atomic_path never leaves a half-written file or folder; the content hashes are stable."""
import hashlib
import json
import os
import time

import pytest

from pipeline import atomic


def _entries(folder):
    return sorted(p.name for p in folder.iterdir())


def test_new_file(tmp_path):
    final = tmp_path / "sub" / "out.bin"  # parent folders are created
    with atomic.atomic_path(final) as tmp:
        assert tmp.parent.parent == final.parent and tmp.name == "out.bin"
        tmp.write_bytes(b"abc")
        assert not final.exists()  # nobody sees it before the block ends
    assert final.read_bytes() == b"abc"
    assert _entries(final.parent) == ["out.bin"]


def test_exception_leaves_nothing(tmp_path):
    final = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(final) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert _entries(tmp_path) == []

    final.write_text("old")  # an existing file survives a failed rewrite untouched
    with pytest.raises(KeyboardInterrupt):
        with atomic.atomic_path(final) as tmp:
            tmp.write_text("new but half")
            raise KeyboardInterrupt
    assert final.read_text() == "old"
    assert _entries(tmp_path) == ["out.json"]


def test_replaces_file(tmp_path):
    final = tmp_path / "a.txt"
    final.write_text("old")
    atomic.write_text(final, "new")
    assert final.read_text() == "new" and _entries(tmp_path) == ["a.txt"]


def test_folders(tmp_path):
    final = tmp_path / "saved_model"
    with atomic.atomic_path(final) as tmp:
        (tmp / "variables").mkdir(parents=True)
        (tmp / "variables" / "v.bin").write_bytes(b"1")
        (tmp / "model.pb").write_bytes(b"2")
    assert (final / "variables" / "v.bin").read_bytes() == b"1"

    with atomic.atomic_path(final) as tmp:  # replacing a folder drops its old files
        tmp.mkdir()
        (tmp / "model.pb").write_bytes(b"3")
    assert sorted(p.name for p in final.rglob("*")) == ["model.pb"]
    assert (final / "model.pb").read_bytes() == b"3"

    with pytest.raises(ValueError):
        with atomic.atomic_path(final) as tmp:
            tmp.mkdir()
            (tmp / "model.pb").write_bytes(b"half")
            raise ValueError
    assert (final / "model.pb").read_bytes() == b"3"
    assert _entries(tmp_path) == ["saved_model"]


def test_suffix_kept_for_writers_that_need_it(tmp_path):
    with atomic.atomic_path(tmp_path / "model", suffix=".h5") as tmp:
        assert tmp.name.endswith(".h5")
        tmp.write_bytes(b"x")
    with atomic.atomic_path(tmp_path / "model.h5", suffix=".h5") as tmp:
        assert tmp.name == "model.h5"
        tmp.write_bytes(b"y")
    assert _entries(tmp_path) == ["model", "model.h5"]


def test_write_json_and_bytes(tmp_path):
    atomic.write_json(tmp_path / "m.json", {"a": 1, "b": [1.5, "x"], "p": tmp_path})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 1, "b": [1.5, "x"], "p": str(tmp_path)}
    atomic.write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"


def test_sha256(tmp_path):
    blob = os.urandom(3 << 20)  # more than one read chunk
    f = tmp_path / "f.bin"
    f.write_bytes(blob)
    assert atomic.sha256_file(f) == hashlib.sha256(blob).hexdigest()
    assert atomic.sha256_tree(f) == hashlib.sha256(blob).hexdigest()

    def tree(root, order):
        for name in order:
            p = root / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(name)
        return root

    a = tree(tmp_path / "a", ["x.txt", "sub/y.txt", "sub/deeper/z.txt"])
    b = tree(tmp_path / "b", ["sub/deeper/z.txt", "x.txt", "sub/y.txt"])  # other order, other mtimes
    (b / "empty_folder").mkdir()
    digest = atomic.sha256_tree(a)
    assert len(digest) == 64 and digest == atomic.sha256_tree(a) == atomic.sha256_tree(b)
    time.sleep(0.01)
    os.utime(a / "x.txt")
    assert atomic.sha256_tree(a) == digest  # mtimes do not count

    (a / "x.txt").write_text("changed")
    assert atomic.sha256_tree(a) != digest
    (a / "x.txt").write_text("x.txt")
    assert atomic.sha256_tree(a) == digest
    (a / "x.txt").rename(a / "w.txt")  # names count
    assert atomic.sha256_tree(a) != digest
