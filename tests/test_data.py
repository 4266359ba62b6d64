"""The CIFAR-10 loader on tiny sources the tests make: image folders (dir, .tar, .tar.gz, .zip),
the official python batches (archive and extracted folder), the cache, and every bad input."""
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import data
from pipeline.data import load_cifar10, resolve_source
from pipeline.errors import PipelineError
from pipeline.model import CLASSES

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"
PER_CLASS = {"train": 2, "test": 1}


# ---------------------------------------------------------------- tiny sources

def _image(split, label, i):
    """A 32x32 RGB image whose first pixels say where it came from; the rest is seeded noise."""
    rng = np.random.default_rng(1000 * label + 10 * i + (split == "test"))
    arr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    arr[0, 0] = (label * 20, i, 200 if split == "test" else 100)
    return arr


def _encode(arr, fmt):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _folder_files(per_class=PER_CLASS, top="cifar10/"):
    """{relative path: bytes} of an image-folder tree, and {split: [(expected array, label)]}.

    Image 0 of each class is a JPEG (expected = Pillow's own decode), the others PNG (lossless).
    """
    files, expected = {}, {s: [] for s in per_class}
    for split, n in per_class.items():
        for label, cls in enumerate(CLASSES):
            for i in range(n):
                arr = _image(split, label, i)
                fmt = "JPEG" if i == 0 else "PNG"
                blob = _encode(arr, fmt)
                if fmt == "JPEG":
                    arr = np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"))
                files[f"{top}{split}/{cls}/{i:04d}.{'jpg' if fmt == 'JPEG' else 'png'}"] = blob
                expected[split].append((arr, label))
    return files, expected


def _write_dir(root, files):
    for name, blob in files.items():
        p = Path(root) / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(blob)
    return Path(root)


def _write_tar(path, files, mode="w:gz", links=()):
    with tarfile.open(path, mode) as tf:
        for name, blob in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))
        for name, target, kind in links:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tf.addfile(info)
    return Path(path)


def _write_zip(path, files):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, blob in files.items():
            zf.writestr(name, blob)
    return Path(path)


def _make_source(kind, tmp_path, files):
    if kind == "dir":
        return _write_dir(tmp_path / "tree", files)
    if kind == "tar":
        return _write_tar(tmp_path / "tree.tar", files, "w")
    if kind == "tar.gz":
        return _write_tar(tmp_path / "tree.tar.gz", files, "w:gz")
    return _write_zip(tmp_path / "tree.zip", files)


def _as_set(images, labels):
    return sorted((img.tobytes(), int(lab)) for img, lab in zip(images, labels))


def _official_batches(seed=0, n_train=3, n_test=4, protocol=pickle.DEFAULT_PROTOCOL):
    """{file name: pickled bytes} of a tiny official-format data set, and its raw rows/labels."""
    rng = np.random.default_rng(seed)
    files, raw = {}, {"train": ([], []), "test": ([], [])}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        split = "test" if name == "test_batch" else "train"
        n = n_test if split == "test" else n_train
        rows = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(x) for x in rng.integers(0, 10, n)]
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": rows,
                 b"filenames": [f"img_{k}.png".encode() for k in range(n)]}
        files[name] = pickle.dumps(batch, protocol=protocol)
        raw[split][0].append(rows)
        raw[split][1].extend(labels)
    files["batches.meta"] = pickle.dumps({b"label_names": [c.encode() for c in CLASSES],
                                          b"num_cases_per_batch": n_train, b"num_vis": 3072})
    files["readme.html"] = b"<html></html>"
    return files, {s: (np.concatenate(r), np.asarray(l)) for s, (r, l) in raw.items()}


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    """Every test gets its own cache and no CIFAR10_DATA from the developer's shell."""
    monkeypatch.setenv("CIFAR_EDGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CIFAR10_DATA", raising=False)


@pytest.fixture(scope="module")
def folder_files():
    return _folder_files()


def _cache_files(tmp_path):
    cache = tmp_path / "cache"
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def _assert_one_line_error(excinfo, *needles):
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"


# ---------------------------------------------------------------- image folders

@pytest.mark.parametrize("kind", ["dir", "tar", "tar.gz", "zip"])
def test_image_folder_sources(kind, tmp_path, folder_files):
    files, expected = folder_files
    source = _make_source(kind, tmp_path, files)
    splits = load_cifar10(str(source), progress=False)
    assert set(splits) == {"train", "test"}
    for split, n in PER_CLASS.items():
        images, labels = splits[split].images, splits[split].labels
        assert images.shape == (10 * n, 32, 32, 3) and images.dtype == np.uint8
        assert images.flags["C_CONTIGUOUS"]
        assert labels.dtype == np.int64
        assert np.bincount(labels, minlength=10).tolist() == [n] * 10
        # every image decoded bit-exactly and paired with its class folder's CIFAR-10 index
        want = expected[split]
        assert _as_set(images, labels) == _as_set([a for a, _ in want], [lab for _, lab in want])


def test_classes_are_cifar10_order():
    assert CLASSES == ("airplane", "automobile", "bird", "cat", "deer",
                       "dog", "frog", "horse", "ship", "truck")


def test_single_split_and_hidden_files(tmp_path, folder_files):
    files, expected = folder_files
    files = {**files, "cifar10/train/cat/.DS_Store": b"junk", "cifar10/._README": b"junk"}
    source = _write_dir(tmp_path / "tree", files)
    out = load_cifar10(source, splits=("test",), progress=False)
    assert list(out) == ["test"] and out["test"].images.shape == (10, 32, 32, 3)


def test_grayscale_and_rgba_become_rgb(tmp_path):
    gray = np.arange(1024, dtype=np.uint8).reshape(32, 32)
    rgba = np.dstack([_image("train", 1, 0), np.full((32, 32), 7, np.uint8)])
    files = {"train/airplane/g.png": _encode(gray, "PNG"),
             "train/automobile/a.png": _encode(rgba, "PNG")}
    out = load_cifar10(_write_dir(tmp_path / "tree", files), splits=("train",), progress=False)["train"]
    by_label = dict(zip(out.labels.tolist(), out.images))
    assert np.array_equal(by_label[0], np.repeat(gray[..., None], 3, axis=2))
    assert np.array_equal(by_label[1], rgba[..., :3])


# ---------------------------------------------------------------- official python batches

@pytest.mark.parametrize("kind", ["tar.gz", "extracted", "parent_dir"])
def test_official_batches(kind, tmp_path):
    files, raw = _official_batches()
    tree = {f"cifar-10-batches-py/{k}": v for k, v in files.items()}
    if kind == "tar.gz":
        source = _write_tar(tmp_path / "cifar-10-python.tar.gz", tree)
    elif kind == "extracted":
        source = _write_dir(tmp_path, tree) / "cifar-10-batches-py"
    else:
        source = _write_dir(tmp_path / "download", tree)
    out = load_cifar10(source, progress=False)
    for split, n in (("train", 15), ("test", 4)):
        rows, labels = raw[split]
        images = out[split].images
        assert images.shape == (n, 32, 32, 3) and images.dtype == np.uint8
        assert out[split].labels.tolist() == labels.tolist()
        # a data row is 1024 R, then 1024 G, then 1024 B values, each plane row-major
        assert images[0, 0, 0, 0] == rows[0, 0]
        assert images[0, 0, 1, 0] == rows[0, 1]
        assert images[0, 1, 0, 1] == rows[0, 1024 + 32]
        assert images[-1, 31, 31, 2] == rows[-1, 3071]
        assert images[1, 5, 7, 1] == rows[1, 1024 + 5 * 32 + 7]
        assert np.array_equal(images, rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_official_batches_any_pickle_protocol(protocol, tmp_path):
    files, raw = _official_batches(protocol=protocol)
    source = _write_dir(tmp_path / "cifar-10-batches-py", files)
    out = load_cifar10(source, splits=("test",), progress=False)["test"]
    assert out.labels.tolist() == raw["test"][1].tolist()
    assert np.array_equal(out.images.transpose(0, 3, 1, 2).reshape(-1, 3072), raw["test"][0])


def test_official_missing_batch(tmp_path):
    files, _ = _official_batches()
    del files["data_batch_3"]
    source = _write_tar(tmp_path / "cifar-10-python.tar.gz", {f"cifar-10-batches-py/{k}": v for k, v in files.items()})
    with pytest.raises(PipelineError) as e:
        load_cifar10(source, progress=False)
    _assert_one_line_error(e, str(source), "data_batch_3", "missing")
    assert _cache_files(tmp_path) == []
    # the test split alone does not need it
    assert len(load_cifar10(source, splits=("test",), progress=False)["test"]) == 4


def test_official_bad_batch_shape(tmp_path):
    files, _ = _official_batches()
    files["test_batch"] = pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]})
    source = _write_dir(tmp_path / "cifar-10-batches-py", files)
    with pytest.raises(PipelineError) as e:
        load_cifar10(source, splits=("test",), progress=False)
    _assert_one_line_error(e, "test_batch", "3072")


@pytest.mark.parametrize("data, labels, words", [
    (np.full((2, 3072), 1000.0), [0, 1], "pixels are float64 with values 1000..1000, expected uint8 0..255"),
    (np.zeros((2, 3072), np.int64) + 7, [0, 1], "pixels are int64 with values 7..7, expected uint8"),
    (np.zeros((2, 3072), np.uint8), [0, 1, 2], "3 labels for 2 images"),
    (np.zeros((2, 3072), np.uint8), [0.5, 1.0], "labels are float64"),
])
def test_official_batches_must_hold_uint8_pixels_and_one_label_each(data, labels, words, tmp_path):
    files, _ = _official_batches()
    files["test_batch"] = pickle.dumps({b"data": data, b"labels": labels})
    source = _write_dir(tmp_path / "cifar-10-batches-py", files)
    with pytest.raises(PipelineError) as e:
        load_cifar10(source, splits=("test",), progress=False, cache_dir=tmp_path / "cache")
    _assert_one_line_error(e, "test_batch", words)
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_archive_member_over_the_size_cap_is_refused_before_reading(tmp_path, monkeypatch):
    """A 400 MB run of zeros gzips to ~400 KB: refused from its header, never expanded."""
    import gzip
    import tarfile
    monkeypatch.setattr(data, "MAX_MEMBER_BYTES", 1 << 20)  # the same check at a size a test can build
    big = tmp_path / "bomb.tar.gz"
    with gzip.open(big, "wb", compresslevel=1) as gz, tarfile.open(fileobj=gz, mode="w") as tf:
        info = tarfile.TarInfo("train/cat/0.png")
        info.size = 2 << 20
        tf.addfile(info, io.BytesIO(bytes(info.size)))
    assert big.stat().st_size < 100_000
    with pytest.raises(PipelineError) as e:
        load_cifar10(big, progress=False, cache_dir=tmp_path / "cache")
    _assert_one_line_error(e, "bomb.tar.gz", "train/cat/0.png is 2,097,152 bytes, over the 1,048,576-byte cap")


def test_oversized_images_are_refused_from_their_header(tmp_path):
    """A PNG claiming 10000x10000 pixels (a few hundred KB) is refused without decoding, in the data
    loader and in predict's image reader."""
    from PIL import Image
    from pipeline import images
    path = tmp_path / "huge.png"
    Image.new("L", (10000, 10000)).save(path, optimize=False)
    assert path.stat().st_size < 2_000_000
    with pytest.raises(images.ImageError, match="10000x10000 pixels, over the 50,000,000-pixel cap"):
        images.load(path)
    folder = tmp_path / "src"
    (folder / "test" / "cat").mkdir(parents=True)
    (folder / "test" / "cat" / "0.png").write_bytes(path.read_bytes())
    with pytest.raises(PipelineError) as e:
        load_cifar10(folder, splits=("test",), progress=False, cache_dir=tmp_path / "cache")
    _assert_one_line_error(e, "0.png", "image is 10000x10000, expected 32x32")


# ---------------------------------------------------------------- safe unpickling

class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_safe_loads_refuses_code(tmp_path):
    from pipeline.safe_pickle import safe_loads
    marker = tmp_path / "pwned"
    with pytest.raises(pickle.UnpicklingError, match="system"):
        safe_loads(pickle.dumps({b"data": _Evil(marker)}))
    for evil in (pickle.dumps(print), pickle.dumps(Path("/")), pickle.dumps(np.load)):
        with pytest.raises(pickle.UnpicklingError):
            safe_loads(evil)
    assert not marker.exists()
    # what real batches hold still loads
    ok = safe_loads(pickle.dumps({b"data": np.ones((2, 3), np.uint8), b"labels": [1, 2], b"name": "x"}))
    assert ok[b"labels"] == [1, 2] and ok[b"data"].sum() == 6


def test_malicious_official_batch(tmp_path):
    marker = tmp_path / "pwned"
    files, _ = _official_batches()
    files["test_batch"] = pickle.dumps({b"data": _Evil(marker), b"labels": [0]})
    source = _write_tar(tmp_path / "cifar-10-python.tar.gz", {f"cifar-10-batches-py/{k}": v for k, v in files.items()})
    with pytest.raises(PipelineError) as e:
        load_cifar10(source, progress=False)
    _assert_one_line_error(e, str(source), "test_batch", "refused")
    assert not marker.exists(), "the pickle's code ran"
    assert _cache_files(tmp_path) == []


# ---------------------------------------------------------------- the source and the cache

def test_env_overrides_config_source(monkeypatch):
    monkeypatch.delenv("CIFAR10_DATA", raising=False)
    assert resolve_source("from/config") == str(ROOT / "from" / "config")  # relative to the project root
    assert resolve_source("/abs/x.tar.gz") == "/abs/x.tar.gz"
    monkeypatch.setenv("CIFAR10_DATA", "/from/env.tar.gz")
    assert resolve_source("from/config") == "/from/env.tar.gz"
    assert resolve_source(None) == "/from/env.tar.gz"
    monkeypatch.delenv("CIFAR10_DATA")
    with pytest.raises(PipelineError, match="CIFAR10_DATA"):
        resolve_source(None)


def test_second_load_comes_from_cache(tmp_path, monkeypatch, folder_files):
    source = _write_tar(tmp_path / "tree.tar.gz", folder_files[0])
    first = load_cifar10(source, progress=False)
    assert len(_cache_files(tmp_path)) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(data, "_decode_image", no_decoding)
    monkeypatch.setattr(data, "_load_image_folder", no_decoding)
    monkeypatch.setattr(data, "iter_members", no_decoding)
    second = load_cifar10(source, progress=False)
    for s in ("train", "test"):
        assert np.array_equal(first[s].images, second[s].images)
        assert np.array_equal(first[s].labels, second[s].labels)
        assert second[s].images.dtype == np.uint8 and second[s].labels.dtype == np.int64


def test_cache_keyed_by_content(tmp_path, folder_files):
    files, _ = folder_files
    source = _write_dir(tmp_path / "tree", files)
    before = load_cifar10(source, progress=False)
    changed = source / "cifar10/test/cat/0000.jpg"
    new_pixels = _image("test", 3, 9)
    changed.write_bytes(_encode(new_pixels, "PNG"))  # same name, new content
    after = load_cifar10(source, progress=False)
    assert len(_cache_files(tmp_path)) == 2  # a new key, not the stale entry
    assert not np.array_equal(before["test"].images, after["test"].images)
    assert any(np.array_equal(img, new_pixels) for img in after["test"].images)
    # the same content elsewhere is the same key: a copy of the original tree reuses `before`'s entry
    copy = _write_dir(tmp_path / "copy", files)
    assert np.array_equal(load_cifar10(copy, progress=False)["test"].images, before["test"].images)
    assert len(_cache_files(tmp_path)) == 2


def test_cache_written_atomically(tmp_path, monkeypatch, folder_files):
    source = _write_tar(tmp_path / "tree.tar", folder_files[0], "w")
    real_decode, calls = data._decode_image, []

    def crash_on_fifth(blob, where):
        calls.append(where)
        if len(calls) == 5:
            raise KeyboardInterrupt  # a crash in the middle of decoding
        return real_decode(blob, where)

    monkeypatch.setattr(data, "_decode_image", crash_on_fifth)
    with pytest.raises(KeyboardInterrupt):
        load_cifar10(source, progress=False)
    assert _cache_files(tmp_path) == []

    # a crash while the cache file is half written leaves neither it nor its temp file
    monkeypatch.setattr(data, "_decode_image", real_decode)
    real_savez = np.savez

    def half_write(f, **arrays):
        f.write(b"PK\x03\x04 half an npz")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", half_write)
    with pytest.raises(OSError, match="disk full"):
        load_cifar10(source, progress=False)
    assert _cache_files(tmp_path) == []

    monkeypatch.setattr(np, "savez", real_savez)
    load_cifar10(source, progress=False)
    names = _cache_files(tmp_path)
    assert len(names) == 1 and names[0].endswith(".npz") and not names[0].startswith(".")


# ---------------------------------------------------------------- archive safety

@pytest.mark.parametrize("member", ["../evil.jpg", "/tmp/evil.jpg", "train/cat/../../../evil.jpg"])
def test_tar_path_traversal(member, tmp_path, folder_files):
    files = {**folder_files[0], member: _encode(_image("train", 3, 0), "PNG")}
    (tmp_path / "in").mkdir()
    source = _write_tar(tmp_path / "in" / "evil.tar.gz", files)
    with pytest.raises(PipelineError) as e:
        load_cifar10(source, progress=False)
    _assert_one_line_error(e, str(source), "traversal")
    assert not (tmp_path / "evil.jpg").exists() and not Path("/tmp/evil.jpg").exists()
    assert _cache_files(tmp_path) == []


def test_zip_path_traversal(tmp_path, folder_files):
    (tmp_path / "in").mkdir()
    source = _write_zip(tmp_path / "in" / "evil.zip", {**folder_files[0], "../evil.jpg": b"x"})
    with pytest.raises(PipelineError) as e:
        load_cifar10(source, progress=False)
    _assert_one_line_error(e, str(source), "traversal")
    assert not (tmp_path / "evil.jpg").exists()
    assert _cache_files(tmp_path) == []


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_tar_link_members_refused(kind, tmp_path, folder_files):
    source = _write_tar(tmp_path / "links.tar", folder_files[0], "w",
                        links=[("cifar10/train/cat/link.jpg", "/etc/passwd", kind)])
    with pytest.raises(PipelineError) as e:
        load_cifar10(source, progress=False)
    _assert_one_line_error(e, str(source), "link.jpg", "link")
    assert _cache_files(tmp_path) == []


def test_zip_symlink_member_refused(tmp_path, folder_files):
    source = _write_zip(tmp_path / "links.zip", folder_files[0])
    with zipfile.ZipFile(source, "a") as zf:
        info = zipfile.ZipInfo("cifar10/train/cat/link.jpg")
        info.external_attr = (0o120777 << 16)  # S_IFLNK
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(PipelineError) as e:
        load_cifar10(source, progress=False)
    _assert_one_line_error(e, str(source), "link")


# ---------------------------------------------------------------- bad inputs

def _bad_sources(tmp_path, files):
    """(name, source path, words the error must contain) for every bad input."""
    tmp_path.mkdir()
    cases = []
    corrupt = {**files, "cifar10/train/dog/bad.jpg": b"\xff\xd8\xff\xe0 not really a jpeg"}
    cases.append(("corrupt image", _write_tar(tmp_path / "corrupt.tar.gz", corrupt), ["train/dog/bad.jpg", "image"]))
    blob = _encode(_image("train", 1, 5), "JPEG")
    truncated = {**files, "cifar10/test/ship/cut.jpg": blob[: len(blob) // 2]}
    cases.append(("truncated image", _write_zip(tmp_path / "cut.zip", truncated), ["test/ship/cut.jpg"]))
    small = {**files, "cifar10/train/cat/small.png": _encode(np.zeros((16, 16, 3), np.uint8), "PNG")}
    cases.append(("wrong size", _write_dir(tmp_path / "small", small), ["small.png", "32x32"]))
    unknown = {**files, "cifar10/train/dragon/0000.png": files["cifar10/train/cat/0001.png"]}
    cases.append(("unknown class", _write_tar(tmp_path / "dragon.tar", unknown, "w"), ["dragon"]))
    only_train = {k: v for k, v in files.items() if "/test/" not in k}
    cases.append(("missing split", _write_zip(tmp_path / "notest.zip", only_train), ["'test'", "missing"]))
    empty = _write_dir(tmp_path / "empty", only_train)
    for cls in CLASSES:
        (empty / "cifar10" / "test" / cls).mkdir(parents=True)
    cases.append(("empty split", empty, ["'test'", "empty"]))
    stray = {**files, "cifar10/test/readme.txt": b"hi"}
    cases.append(("file outside class folder", _write_dir(tmp_path / "stray", stray), ["readme.txt"]))
    cases.append(("no image folders", _write_dir(tmp_path / "flat", {"a.png": files["cifar10/train/cat/0001.png"]}),
                  ["train/<class>"]))
    (tmp_path / "notes.txt").write_text("hello")
    cases.append(("not an archive", tmp_path / "notes.txt", ["not a directory or"]))
    (tmp_path / "fake.tar.gz").write_bytes(b"this is not gzip at all" * 10)
    cases.append(("fake tar.gz", tmp_path / "fake.tar.gz", ["tar"]))
    (tmp_path / "fake.zip").write_bytes(b"this is not a zip" * 10)
    cases.append(("fake zip", tmp_path / "fake.zip", ["zip"]))
    good = _write_tar(tmp_path / "good.tar.gz", files).read_bytes()
    (tmp_path / "truncated.tar.gz").write_bytes(good[: len(good) // 2])
    cases.append(("truncated tar.gz", tmp_path / "truncated.tar.gz", ["tar"]))
    with zipfile.ZipFile(tmp_path / "crc.zip", "w", zipfile.ZIP_STORED) as zf:
        for name, blob in files.items():
            zf.writestr(name, blob)
    broken = bytearray((tmp_path / "crc.zip").read_bytes())
    member = files["cifar10/train/cat/0001.png"]
    at = bytes(broken).index(member) + len(member) // 2
    broken[at:at + 16] = bytes(16)  # damage a stored member: its CRC no longer matches
    (tmp_path / "crc.zip").write_bytes(bytes(broken))
    cases.append(("corrupt zip member", tmp_path / "crc.zip", ["zip"]))
    cases.append(("nonexistent", tmp_path / "no" / "such.tar.gz", ["does not exist"]))
    return cases


def test_bad_inputs_one_line_errors(tmp_path, folder_files):
    files, _ = folder_files
    for name, source, words in _bad_sources(tmp_path / "src", files):
        with pytest.raises(PipelineError) as e:
            load_cifar10(source, progress=False)
        msg = str(e.value)
        assert "\n" not in msg, (name, msg)
        assert "object at 0x" not in msg, (name, msg)  # no internals in a user's error
        assert msg.startswith(str(source)), (name, msg)
        for w in words:
            assert w in msg, (name, w, msg)
        assert _cache_files(tmp_path) == [], name


def _run_cli(args, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CIFAR10_DATA"}
    env.update(CIFAR_EDGE_CACHE=str(tmp_path / "cache"), TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_bad_sources(tmp_path, folder_files):
    files, _ = folder_files
    cases = _bad_sources(tmp_path / "src", files)
    picked = {"corrupt image", "unknown class", "not an archive", "truncated tar.gz", "nonexistent"}
    for name, source, words in [c for c in cases if c[0] in picked]:
        r = _run_cli(["data", "--source", str(source)], tmp_path)
        assert r.returncode != 0, name
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, r.stderr)
        assert str(source) in lines[0], (name, lines[0])
        assert _cache_files(tmp_path) == [], name


def test_cli_good_source(tmp_path, folder_files):
    source = _write_zip(tmp_path / "tree.zip", folder_files[0])
    r = _run_cli(["data", "--source", str(source)], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "train: images (20, 32, 32, 3) uint8" in r.stdout
    assert "test: images (10, 32, 32, 3) uint8" in r.stdout
    assert len(_cache_files(tmp_path)) == 1


# ---------------------------------------------------------------- the real shared archive

def _row_digests(split):
    flat = np.ascontiguousarray(split.images).reshape(len(split), -1)
    return [hashlib.sha1(row.tobytes() + bytes([int(lab)])).digest() for row, lab in zip(flat, split.labels)]


@pytest.mark.skipif(not SHARED.exists(), reason=f"{SHARED} not present")
def test_real_shared_archive(monkeypatch, cfg):
    from pipeline import evalset
    monkeypatch.delenv("CIFAR_EDGE_CACHE")  # the default .cache/data: slow once, then fast
    full = load_cifar10(SHARED)  # first load decodes (~minute) unless cached

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again instead of reading the cache")

    read = []
    real_read = data._read_cache

    def reading(cache, splits):
        read.append(Path(cache))
        return real_read(cache, splits)

    with monkeypatch.context() as m:
        m.setattr(data, "iter_members", no_decoding)
        m.setattr(data, "_read_cache", reading)
        again = load_cifar10(SHARED, progress=False)
    # read from the cache file, not decoded again (its speed is not asserted: timings flake on a shared machine)
    assert len(read) == 1 and read[0].suffix == ".npz" and read[0].parent == data.default_cache_dir(), read
    for split, n in (("train", 5000), ("test", 1000)):
        assert full[split].images.shape == (10 * n, 32, 32, 3)
        assert full[split].images.dtype == np.uint8
        assert np.bincount(full[split].labels, minlength=10).tolist() == [n] * 10
        assert np.array_equal(full[split].images, again[split].images)

    # the committed test split is exactly the shared archive's test split
    committed = evalset.load_test(cfg)
    assert committed.images.shape == (10000, 32, 32, 3)
    assert sorted(_row_digests(committed)) == sorted(_row_digests(full["test"]))

    # the calibration subset: 100 per class, training images (same bytes as the shared
    # archive's train/ members), none of which is in the test split
    calib = evalset.load_calibration(cfg)
    assert np.bincount(calib.labels, minlength=10).tolist() == [100] * 10
    train_digests, test_digests = set(_row_digests(full["train"])), set(_row_digests(full["test"]))
    calib_digests = _row_digests(calib)
    assert all(d in train_digests for d in calib_digests)
    assert not any(d in test_digests for d in calib_digests)
    names = [p for p, _ in data.iter_members(ROOT / cfg.data.calibration)]
    assert len(names) == 1000 and all(p.parts[0] == "train" for p in names)
