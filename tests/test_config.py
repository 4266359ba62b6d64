"""One typed config: every key declared once; files, --set and flags checked against it before any work."""
import argparse
import json
import subprocess
import sys

import pytest

from conftest import ROOT
from pipeline import config
from pipeline.errors import PipelineError

TOML = """
[train]
preset = "mine"
out_dir = "runs"

[train.presets.mine]
lr = 0.2
epochs = 30

[export]
formats = ["keras", "onnx_fp32"]
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
    parser.add_argument("--epochs", dest="recipe.epochs", type=int, default=None)
    parser.add_argument("--quiet", action="store_true")  # undotted flags never touch the config
    return parser


def test_the_project_config_loads_and_is_frozen():
    cfg = config.load()
    assert cfg.model.preset == "seed" and cfg.train.preset in cfg.train.presets
    assert cfg.recipe is cfg.train.presets[cfg.train.preset]
    with pytest.raises(AttributeError):
        cfg.train.seed = 3  # locked once built
    with pytest.raises(TypeError):
        cfg.train.presets["x"] = cfg.recipe


def test_defaults_come_from_the_schema_only(toml_file):
    cfg = config.load(toml_file)
    assert cfg.recipe.lr == 0.2 and cfg.recipe.epochs == 30
    assert cfg.recipe.batch_size == config.Recipe.batch_size  # unset keys take the declared default
    assert cfg.gates.max_drop_pp_int8 == config.Gates.max_drop_pp_int8
    assert cfg.export.formats == ("keras", "onnx_fp32")


def test_set_and_flags_keep_types_and_flags_win(toml_file):
    args = _parser().parse_args(["--config", str(toml_file), "--set", "recipe.lr=0.05", "--set",
                                 "recipe.epochs=5", "--set", "export.formats=['tflite_int8', 'onnx_int8']",
                                 "--set", "model.preset=resnet20v1", "--epochs", "7", "--out-dir", "x y"])
    cfg = config.from_args(args)
    assert cfg.recipe.lr == 0.05 and isinstance(cfg.recipe.lr, float)
    assert cfg.recipe.epochs == 7  # the flag wins over --set
    assert cfg.export.formats == ("tflite_int8", "onnx_int8") and cfg.export.out_dir == "x y"
    assert cfg.model.preset == "resnet20v1"  # a bare word is a string
    assert config.load(toml_file).recipe.lr == 0.2  # the file is not changed


@pytest.mark.parametrize("item, words", [
    ("gates.max_drop_pp_int88=0.5", "unknown config key 'gates.max_drop_pp_int88'; did you mean gates.max_drop_pp_int8?"),
    ("gate.max_drop_pp_int8=0.5", "unknown config key 'gate'; did you mean gates?"),
    ("train.epochs=3", "unknown config key 'train.epochs'"),
    ("recipe.epochs=0", "'train.presets.mine.epochs' = 0: must be >= 1"),
    ("recipe.batch_size=0", "must be >= 1"),
    ("recipe.lr=-1", "'train.presets.mine.lr' = -1.0: must be > 0"),
    ("recipe.lr=fast", "expected a number"),
    ("recipe.epochs=2.5", "expected a whole number"),
    ("evaluate.limit=-5", "'evaluate.limit' = -5: must be >= 0"),
    ("gates.min_agreement_int8=1.5", "must be <= 1"),
    ("export.formats=['onnx_fp32', 'onnx_fp64']", "'onnx_fp64' is not one of"),
    ("train.mixed_precision=half", "'half' is not one of auto, float32, mixed_bfloat16"),
    ("train.preset=nope", "'train.preset' = 'nope' names no recipe"),
    ("train.time_budget=soon", "expected a duration"),
    ("train.presets.mine.steps=[[1]]", "expected [epoch >= 0, lr > 0]"),
    ("evaluate.threads=[1, -2]", "'evaluate.threads'"),
    ("data.source.x=1", "'data.source' = {'x': 1}: expected a string"),
    ("train.lr", "expected section.key=VALUE"),
])
def test_bad_keys_and_values_are_one_line_errors_naming_the_key(item, words, toml_file):
    with pytest.raises(PipelineError) as e:
        config.from_args(_parser().parse_args(["--config", str(toml_file), "--set", item]))
    msg = str(e.value)
    assert words in msg and "\n" not in msg, msg


def test_a_misspelt_key_in_a_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[gates]\nmax_drop_pp_flaot = 0.5\n")
    with pytest.raises(PipelineError, match=r"bad.toml: unknown config key 'gates.max_drop_pp_flaot'; "
                                            r"did you mean gates.max_drop_pp_float\?"):
        config.load(bad)


def test_bad_config_files(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nlr = = 0.1\n")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    cases = [(bad, "invalid TOML"), (binary, "invalid TOML"),
             (tmp_path / "missing.toml", "not found"), (tmp_path, "is a folder, not a regular file")]
    for path, words in cases:
        with pytest.raises(PipelineError) as e:
            config.load(path)
        msg = str(e.value)
        assert msg.startswith(str(path)) and words in msg and "\n" not in msg, msg


@pytest.mark.parametrize("stage, args", [
    ("evaluate", ["--set", "gates.max_drop_pp_int88=0.5"]),
    ("export", ["--set", "export.formats=['onnx_fp32', 'bogus']"]),
    ("train", ["--epochs", "0"]),
    ("train", ["--batch-size", "0"]),
    ("train", ["--lr", "-1"]),
    ("evaluate", ["--limit", "-5"]),
])
def test_every_stage_refuses_before_any_work(stage, args, tmp_path):
    proc = subprocess.run([sys.executable, "-m", stage, *args], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    assert list(tmp_path.iterdir()) == [], "something was written"


def test_resolved_config_round_trips(tmp_path, toml_file):
    cfg = config.from_args(_parser().parse_args(["--config", str(toml_file), "--epochs", "3"]))
    config.write_resolved(cfg, tmp_path / "run")
    written = json.loads((tmp_path / "run" / "config.resolved.json").read_text())
    assert written["train"]["presets"]["mine"]["epochs"] == 3
    assert config.from_dict(written) == cfg


def test_download_source_stays_a_word(monkeypatch):
    from pipeline.data import resolve_source
    monkeypatch.delenv("CIFAR10_DATA", raising=False)
    assert resolve_source("download") == "download"
    assert resolve_source("data/x.tar.gz") == str(config.ROOT / "data" / "x.tar.gz")


def test_readme_lists_every_key():
    readme = (ROOT / "README.md").read_text()
    missing = [k for k, _, _ in config.describe() if f"`{k}`" not in readme]
    assert not missing, f"README's config table lacks {missing}"


def test_durations():
    assert config.parse_duration("90m", "x") == 5400 and config.parse_duration("1h30m", "x") == 5400
    assert config.parse_duration("45s", "x") == 45 and config.parse_duration("2h", "x") == 7200
    for bad in ("", "0m", "m", "ten minutes"):
        with pytest.raises(PipelineError):
            config.parse_duration(bad, "x")
