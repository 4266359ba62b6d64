"""One config: pipeline.toml, overridden by --set and by dotted flags, recorded next to outputs."""
import argparse
import json

import pytest

from pipeline import config
from pipeline.errors import PipelineError

TOML = """
[data]
source = "../shared/datasets/cifar10-jpeg.tar.gz"

[train]
lr = 0.4
epochs = 30
out_dir = "runs"

[export]
formats = ["keras", "onnx_fp32"]
qat = false
"""


@pytest.fixture
def toml_file(tmp_path):
    p = tmp_path / "pipeline.toml"
    p.write_text(TOML)
    return p


def _parser():
    parser = argparse.ArgumentParser()
    config.add_config_args(parser)
    parser.add_argument("--out-dir", dest="export.out_dir", default=None)
    parser.add_argument("--epochs", dest="train.epochs", type=int, default=None)
    parser.add_argument("--verbose", action="store_true")  # undotted flags never touch the config
    return parser


def test_the_project_config_loads():
    cfg = config.load()
    assert {"data", "model", "train", "export", "evaluate", "gates"} <= set(cfg)
    assert cfg["model"]["preset"] in ("seed", "resnet20v1")
    assert cfg["train"]["preset"] in cfg["train"]["presets"]
    assert config.DEFAULT_CONFIG == config.ROOT / "pipeline.toml"


def test_load_a_file(toml_file):
    cfg = config.load(toml_file)
    assert cfg["train"] == {"lr": 0.4, "epochs": 30, "out_dir": "runs"}
    assert cfg["export"]["formats"] == ["keras", "onnx_fp32"]


def test_set_keeps_types(toml_file):
    args = _parser().parse_args([
        "--config", str(toml_file),
        "--set", "train.lr=0.05", "--set", "train.epochs=2", "--set", "export.qat=true",
        "--set", "export.formats=['tflite_int8', 'onnx_int8']", "--set", "model.preset=resnet20v1",
        "--set", "train.out_dir=runs/exp 1", "--set", "new.section.key=\"quoted\"",
        "--set", "train.steps=[[26, 1e-4]]",
    ])
    cfg = config.from_args(args)
    assert cfg["train"]["lr"] == 0.05 and isinstance(cfg["train"]["lr"], float)
    assert cfg["train"]["epochs"] == 2 and isinstance(cfg["train"]["epochs"], int)
    assert cfg["export"]["qat"] is True
    assert cfg["export"]["formats"] == ["tflite_int8", "onnx_int8"]
    assert cfg["model"]["preset"] == "resnet20v1"  # a bare word is a string
    assert cfg["train"]["out_dir"] == "runs/exp 1"
    assert cfg["new"]["section"]["key"] == "quoted"
    assert cfg["train"]["steps"] == [[26, 1e-4]]
    assert cfg["data"]["source"] == "../shared/datasets/cifar10-jpeg.tar.gz"  # untouched
    assert config.load(toml_file)["train"]["lr"] == 0.4  # the file is not changed


def test_dotted_flags_override_file_and_set(toml_file):
    args = _parser().parse_args(["--config", str(toml_file), "--set", "train.epochs=5",
                                 "--epochs", "7", "--out-dir", "elsewhere", "--verbose"])
    cfg = config.from_args(args)
    assert cfg["train"]["epochs"] == 7  # the flag wins over --set
    assert cfg["export"]["out_dir"] == "elsewhere"
    assert "verbose" not in cfg

    cfg = config.from_args(_parser().parse_args(["--config", str(toml_file)]))
    assert cfg["train"]["epochs"] == 30  # a flag not given keeps the file's value
    assert "out_dir" not in cfg["export"]


def test_from_args_without_config_flags(toml_file):
    # a stage parser that declares only dotted flags still resolves from pipeline.toml
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", dest="model.preset", default=None)
    cfg = config.from_args(parser.parse_args(["--preset", "resnet20v1"]))
    assert cfg["model"]["preset"] == "resnet20v1" and "gates" in cfg


@pytest.mark.parametrize("item, words", [("train.lr", "section.key=VALUE"),
                                          ("train.lr.x=1", "not a section")])
def test_bad_set(item, words, toml_file):
    args = _parser().parse_args(["--config", str(toml_file), "--set", item])
    with pytest.raises(PipelineError, match=words):
        config.from_args(args)


def test_bad_config_files(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nlr = = 0.1\n")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    cases = [(bad, "invalid TOML"), (binary, "invalid TOML"),
             (tmp_path / "missing.toml", "not found"), (tmp_path, "cannot read")]
    for path, words in cases:
        with pytest.raises(PipelineError) as e:
            config.load(path)
        msg = str(e.value)
        assert msg.startswith(str(path)) and words in msg and "\n" not in msg, msg


def test_write_resolved(tmp_path, toml_file):
    cfg = config.from_args(_parser().parse_args(["--config", str(toml_file), "--epochs", "3"]))
    out = tmp_path / "run" / "1"
    config.write_resolved(cfg, out)
    assert sorted(p.name for p in out.iterdir()) == ["config.resolved.json"]
    written = json.loads((out / "config.resolved.json").read_text())
    assert written == cfg and written["train"]["epochs"] == 3
    cfg["train"]["epochs"] = 4  # rewriting replaces it
    config.write_resolved(cfg, out)
    assert json.loads((out / "config.resolved.json").read_text())["train"]["epochs"] == 4
    assert sorted(p.name for p in out.iterdir()) == ["config.resolved.json"]


def test_project_path(tmp_path):
    assert config.project_path("data/x.tar.gz") == config.ROOT / "data" / "x.tar.gz"
    assert config.project_path(tmp_path) == tmp_path
    assert (config.ROOT / "pipeline" / "config.py").exists()
