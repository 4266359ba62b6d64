"""One typed config for every stage, declared once below; pipeline.toml and every flag are checked against it.

Every key has its type, default, allowed range or choices and a one-line meaning in the
dataclasses of this module: nothing else in the code holds a default. `load()` reads
pipeline.toml (or another file), applies `--set section.key=VALUE` items (VALUE is TOML)
and the stage's flags, then builds a frozen `Config`. An unknown key (with the closest
valid name), a wrong type or a value out of range is a PipelineError naming the key,
raised before any work starts. `--recipe.KEY` style flags (`dest="recipe.epochs"`) change
the training preset that `train.preset` selects. `to_dict()` is what config.resolved.json holds.
"""
import argparse
import dataclasses
import difflib
import math
import re
import tomllib
import types
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import atomic
from pipeline.artifacts import ARTIFACTS, DEFAULT_FORMATS
from pipeline.errors import PipelineError, first_line

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "pipeline.toml"
MAX_IMAGES = 10_000_000  # upper bound of every image-count key: 200 times CIFAR-10's training split
MAX_THREADS = 1024  # upper bound of every thread-count key


def key(default, help, *, choices=None, low=None, high=None, low_open=False, high_open=False):
    """A config key: its default, meaning and allowed values (range ends closed unless *_open)."""
    meta = dict(help=help, choices=choices, low=low, high=high, low_open=low_open, high_open=high_open)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: _frozen(default), metadata=meta)
    return field(default=default, metadata=meta)


# ---------------------------------------------------------------- the schema: every default, once

@dataclass(frozen=True)
class Data:
    source: str = key("../shared/datasets/cifar10-jpeg.tar.gz",
                      "image-folder tree or archive, official cifar-10-python.tar.gz, or 'download' "
                      "(env CIFAR10_DATA wins); relative to the project root")
    test: str = key("data/cifar10-jpeg-test.tar.gz", "the committed 10,000-image test split")
    calibration: str = key("data/cifar10-jpeg-calibration.tar.gz",
                           "the committed 1,000-image calibration subset of the training split")
    parity: str = key("data/cifar10-jpeg-parity.tar.gz",
                      "the committed 1,000 training images export checks every artifact on (none is a calibration "
                      "image: pipeline/sampling.py)")


@dataclass(frozen=True)
class Model:
    preset: str = key("seed", "architecture: seed (792,330 params) or resnet20v1 (274,442)",
                      choices=("seed", "resnet20v1"))


@dataclass(frozen=True)
class Recipe:
    optimizer: str = key("sgd", "sgd (Nesterov) or adam", choices=("sgd", "adam"))
    lr: float = key(0.4, "peak learning rate", low=0, low_open=True, high=10)
    momentum: float = key(0.9, "SGD momentum", low=0, high=1, high_open=True)
    batch_size: int = key(512, "images per step (global, over all replicas)", low=1, high=65536)
    epochs: int = key(30, "passes over the training images", low=1, high=10000)
    schedule: str = key("onecycle", "onecycle (linear warm-up, cosine decay), linear (linear warm-up, linear decay "
                                    "to 0), step, or constant", choices=("onecycle", "linear", "step", "constant"))
    steps: list = key([], "step schedule: [[epoch, lr], ...] from that epoch on")
    warmup_frac: float = key(0.15, "one-cycle warm-up share of all steps", low=0, high=1, high_open=True)
    l2: float = key(5e-4, "L2 penalty (on the weights l2_scope names)", low=0, high=1)
    l2_scope: str = key("conv_kernels", "conv_kernels (not the dense layer, batch norm or biases) or all (every "
                                        "weight)", choices=("conv_kernels", "all"))
    crop: str = key("translate", "random 4-pixel shift: translate (zero padding) or reflect (reflect padding)",
                    choices=("translate", "reflect"))
    cutout: int = key(8, "cutout square side in pixels (0 = off)", low=0, high=32)
    label_smoothing: float = key(0.1, "label smoothing", low=0, high=1, high_open=True)
    ema: float = key(0.0, "weight EMA momentum per step (0 = off); validation and checkpoints use the average",
                     low=0, high=1, high_open=True)
    subset: int = key(0, "train on this many images (0 = all)", low=0, high=MAX_IMAGES)
    val_size: int = key(5000, "images held out of the training split to pick the checkpoint", low=0, high=MAX_IMAGES)


RECIPE_KEYS = tuple(f.name for f in dataclasses.fields(Recipe))


@dataclass(frozen=True)
class Train:
    preset: str = key("fast", "the recipe: a key of train.presets")
    out_dir: str = key("runs", "where run folders go")
    seed: int = key(0, "random seed (data split, init, augmentation)", low=0, high=2**32 - 1)  # numpy's seed range
    steps_per_execution: int = key(1, "steps per host round-trip", low=1, high=10000)
    mixed_precision: str = key("auto", "auto: mixed_bfloat16 where the CPU or accelerator computes bf16 natively",
                               choices=("auto", "float32", "mixed_bfloat16"))
    data_parallel: bool = key(False, "split each batch over all local devices")
    fused_batchnorm: bool = key(True, "TensorFlow: train batch norm through the fused (oneDNN) kernel, 1.6x the "
                                      "images/s of Keras' separate ops on this CPU (BENCHMARKS.md)")
    intra_op_threads: int = key(0, "TensorFlow threads inside one op (0 = all cores)", low=0, high=MAX_THREADS)
    inter_op_threads: int = key(1, "TensorFlow ops run side by side (0 = TensorFlow's choice); on 2 cores 1 and "
                                   "TensorFlow's choice ran within 7% of each other, either way (BENCHMARKS.md)",
                                low=0, high=MAX_THREADS)
    time_budget: str = key("", "wall-clock budget like 90m or 2h: size the epochs to it ('' = off)")
    presets: dict = key({}, "named recipes (see Recipe)")


@dataclass(frozen=True)
class Export:
    checkpoint: str = key("models/reference/model.h5", "the Keras checkpoint to export")
    out_dir: str = key("artifacts", "output folder of the artifacts and manifest.json")
    formats: list = key(DEFAULT_FORMATS,
                        "artifact kinds to write (rows of pipeline.artifacts.ARTIFACTS)", choices=tuple(ARTIFACTS))
    qat_minutes: float = key(15.0, "wall-clock budget of the QAT fine-tune loop; the lr schedule is sized to it",
                             low=0, low_open=True, high=1440)
    qat_images: int = key(0, "training images the QAT fine-tune draws from (0 = all)", low=0, high=MAX_IMAGES)
    qat_data: str = key("train", "QAT fine-tune images: train (data.source) or calibration",
                        choices=("train", "calibration"))
    qat_lr: float = key(1e-4, "start lr of the QAT fine-tune's cosine decay to 1% of it (recipe optimizer, "
                              "augmentation, loss and weight EMA)", low=0, low_open=True, high=1)
    qat_batch_size: int = key(64, "QAT fine-tune batch size", low=1, high=4096)
    onnx_opset: int = key(17, "ONNX opset", low=13, high=21)
    parity_images: int = key(1000, "calibration images each artifact is checked on against the Keras model",
                             low=1, high=100000)
    calibration_images: int = key(1000, "int8 calibration images from data.calibration (0 = all)", low=0,
                                  high=MAX_IMAGES)
    # onnxruntime static int8 (benchmarks/onnx_int8.py measures every option): uint8 activations x int8
    # weights in QDQ is the layout whose every Conv/Add/Mul onnxruntime fuses into QLinear* kernels on x86.
    onnx_int8_format: str = key("qdq", "ONNX int8 graph: qdq (Q/DQ pairs) or qoperator (QLinear* ops)",
                                choices=("qdq", "qoperator"))
    onnx_int8_activations: str = key("uint8", "ONNX int8 activation type", choices=("uint8", "int8"))
    onnx_int8_weights: str = key("int8", "ONNX int8 weight type", choices=("int8", "uint8"))
    onnx_int8_per_channel: bool = key(True, "ONNX int8: one weight scale per output channel")
    onnx_int8_reduce_range: bool = key(False, "ONNX int8: 7-bit weights (for x86 without VNNI, where u8 x s8 "
                                              "products can saturate)")
    layer_error_images: int = key(200, "calibration images (spread over the classes) each int8 artifact's per-layer "
                                       "quantization error is measured on; 0 = skip", low=0, high=100000)
    int8_max_drop_pp: float = key(0.0, "accuracy-constrained int8: keep the most quantization-sensitive layers in "
                                        "float, fewest first, until int8 is within this drop of float on held-out "
                                        "calibration images (pp); 0 = off", low=0, high=100)
    int8_holdout_images: int = key(300, "accuracy-constrained int8: calibration images held out of calibration to "
                                        "measure that drop", low=1, high=100000)
    onnx_int8_calibration: str = key("minmax", "ONNX int8 activation ranges: minmax, entropy or percentile",
                                     choices=("minmax", "entropy", "percentile"))
    reference_metrics: str = key("", "metrics.json stating the checkpoint's test accuracy, copied into the manifest "
                                     "('' = metrics.json beside the checkpoint)")


@dataclass(frozen=True)
class Evaluate:
    manifest: str = key("artifacts/manifest.json", "the manifest export wrote")
    report_dir: str = key("reports", "where evaluation.{json,md} and charts go")
    warmup_runs: int = key(10, "untimed batch-1 runs before latency is timed", low=0, high=100000)
    latency_runs: int = key(100, "timed batch-1 runs per thread count", low=1, high=1000000)
    threads: list = key([1, 0], "thread counts latency is measured at (0 = all cores)")
    throughput_batch: int = key(64, "batch size of the throughput pass", low=1, high=4096)
    limit: int = key(0, "0 = all 10,000 test images; N = N images spread over the classes", low=0, high=MAX_IMAGES)
    # at most 60 s: each probe's worker is itself given 120 s (evaluate.run.PeakProbe)
    peak_probe_s: float = key(2.0, "seconds of the fp32 + int8 matmul peak probe per thread count",
                              low=0, low_open=True, high=60)
    worker_timeout_s: float = key(900.0, "per artifact and thread count; a hung runtime fails that artifact only",
                                  low=0, low_open=True, high=86400)
    baseline: str = key("", "an earlier evaluation.json to compare with ('' = none); writes diff.md")
    profile: bool = key(False, "also write each artifact's top operators by time, from its runtime's profiler")
    profile_runs: int = key(200, "batch-1 runs the op profile sums over (1 thread)", low=1, high=100000)


@dataclass(frozen=True)
class Gates:
    max_drop_pp_float: float = key(0.1, "fp32/fp16 artifacts: allowed accuracy drop vs the reference (pp)",
                                   low=0, high=100)
    max_drop_pp_int8: float = key(1.0, "int8 artifacts: allowed accuracy drop vs the reference (pp)",
                                  low=0, high=100)
    reference_tolerance_pp: float = key(0.2, "the keras artifact vs the accuracy the manifest's model card states",
                                        low=0, high=100)
    min_agreement_float: float = key(0.995, "float artifacts: top-1 agreement with the keras artifact", low=0, high=1)
    min_agreement_int8: float = key(0.97, "int8 artifacts: top-1 agreement with the keras artifact", low=0, high=1)
    min_parity_float: float = key(0.999, "export refuses a float artifact below this agreement on parity images",
                                  low=0, high=1)
    min_parity_int8: float = key(0.98, "export refuses an int8 artifact below this agreement", low=0, high=1)
    min_parity_qat: float = key(0.95, "export refuses a QAT artifact below this agreement (its weights move)",
                                low=0, high=1)
    mobile_checks: list = key(["builtin_ops", "integer_io"],
                              "mobile readiness every .tflite for servers must pass (pipeline.mobile_checks): "
                              "builtin_ops (no Flex/custom ops), integer_io (int8 kinds: integer input and output), "
                              "gpu (the LiteRT GPU delegate's rules: static shapes, supported ops and versions)",
                              choices=("builtin_ops", "integer_io", "gpu"))
    mobile_checks_phone: list = key(["builtin_ops", "integer_io", "gpu"],
                                    "the same for the .tflite kinds a phone gets (the artifact table's mobile column)",
                                    choices=("builtin_ops", "integer_io", "gpu"))
    ort_mobile_float: list = key(["nnapi", "coreml_mlprogram"],
                                 "float ONNX kinds a phone gets: execution providers that must take every node "
                                 "(pipeline.ort_mobile)", choices=("nnapi", "coreml_neuralnetwork", "coreml_mlprogram"))
    ort_mobile_int8: list = key(["nnapi"],
                                "int8 ONNX kinds a phone gets: the same; Core ML has no QuantizeLinear / "
                                "DequantizeLinear, so a QDQ model runs on it in 33 pieces (22% of the nodes)",
                                choices=("nnapi", "coreml_neuralnetwork", "coreml_mlprogram"))
    min_agreement_client: float = key(0.999, "app clients (the artifact table's clients column, e.g. MediaPipe Tasks): "
                                             "top-1 agreement with the file's own runtime (LiteRT) on the same images",
                                      low=0, high=1)
    max_regression_pp: float = key(0.3, "--baseline: allowed accuracy loss per artifact vs the baseline (pp)",
                                   low=0, high=100)


@dataclass(frozen=True)
class Config:
    data: Data = field(default_factory=Data)
    model: Model = field(default_factory=Model)
    train: Train = field(default_factory=Train)
    export: Export = field(default_factory=Export)
    evaluate: Evaluate = field(default_factory=Evaluate)
    gates: Gates = field(default_factory=Gates)

    @property
    def recipe(self) -> Recipe:
        """The training recipe train.preset selects."""
        return self.train.presets[self.train.preset]

    def to_dict(self):
        return _thaw(self)


# ---------------------------------------------------------------- building and checking

def _frozen(value):
    """Lists become tuples and dicts read-only, so a built config cannot be changed."""
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return types.MappingProxyType({k: _frozen(v) for k, v in value.items()})
    return value


def _thaw(value):
    """Plain lists and dicts again: what config.resolved.json holds."""
    if dataclasses.is_dataclass(value):
        return {f.name: _thaw(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_thaw(v) for v in value]
    if isinstance(value, (dict, types.MappingProxyType)):
        return {k: _thaw(v) for k, v in value.items()}
    return value


def _unknown(where, dotted, known):
    close = difflib.get_close_matches(dotted.rsplit(".", 1)[-1], known, n=1, cutoff=0.6)
    prefix = dotted.rsplit(".", 1)[0] + "." if "." in dotted else ""
    hint = f"; did you mean {prefix}{close[0]}?" if close else f"; known: {', '.join(known)}"
    return PipelineError(f"{where}: unknown config key {dotted!r}{hint}")


def _check_value(where, dotted, f, value):
    """The value converted to the field's type, or a PipelineError naming the key."""
    kind, meta = f.type, f.metadata
    bad = lambda why: PipelineError(f"{where}: config key {dotted!r} = {value!r}: {why}")  # noqa: E731
    if kind is bool:
        if not isinstance(value, bool):
            raise bad("expected true or false")
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("expected a whole number")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("expected a number")
        try:
            value = float(value)
        except OverflowError:  # an int beyond any float (a JSON config can hold one)
            raise bad("out of range") from None
        if not math.isfinite(value):  # nan compares false with every bound; inf would switch a timeout off
            raise bad("must be a finite number (not nan or inf)")
    elif kind is str:
        if not isinstance(value, str):
            raise bad("expected a string")
    elif kind is list:
        if not isinstance(value, (list, tuple)):
            raise bad("expected a list")
    if meta.get("choices") is not None:
        items = value if kind is list else [value]
        wrong = [v for v in items if v not in meta["choices"]]
        if wrong:
            raise bad(f"{wrong[0]!r} is not one of {', '.join(map(str, meta['choices']))}")
    low, high = meta.get("low"), meta.get("high")
    if low is not None and (value < low or (meta["low_open"] and value == low)):
        raise bad(f"must be {'>' if meta['low_open'] else '>='} {low}")
    if high is not None and (value > high or (meta["high_open"] and value == high)):
        raise bad(f"must be {'<' if meta['high_open'] else '<='} {high}")
    return _frozen(value)


def _build(cls, raw, where, prefix):
    if not isinstance(raw, dict):
        raise PipelineError(f"{where}: config key {prefix!r} must be a section (a table)")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in raw:
        if name not in fields:
            raise _unknown(where, f"{prefix}.{name}", list(fields))
    values = {}
    for name, value in raw.items():
        f, dotted = fields[name], f"{prefix}.{name}"
        if dataclasses.is_dataclass(f.type):
            values[name] = _build(f.type, value, where, dotted)
        elif name == "presets" and cls is Train:
            if not isinstance(value, dict):
                raise PipelineError(f"{where}: config key {dotted!r} must be a table of recipes")
            values[name] = types.MappingProxyType(
                {p: _build(Recipe, r, where, f"{dotted}.{p}") for p, r in value.items()})
        else:
            values[name] = _check_value(where, dotted, f, value)
    return cls(**values)


def _check_whole(cfg, where):
    """Rules that tie keys together."""
    if cfg.train.preset not in cfg.train.presets:
        raise PipelineError(f"{where}: config key 'train.preset' = {cfg.train.preset!r} names no recipe; "
                            f"known: {', '.join(cfg.train.presets) or 'none'}")
    for name, r in cfg.train.presets.items():
        for i, step in enumerate(r.steps):
            if not (isinstance(step, tuple) and len(step) == 2
                    and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in step)
                    and step[0] >= 0 and step[1] > 0):
                raise PipelineError(f"{where}: config key 'train.presets.{name}.steps' item {i}: "
                                    f"expected [epoch >= 0, lr > 0], got {_thaw(step)!r}")
    bad_threads = [t for t in cfg.evaluate.threads
                   if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t <= MAX_THREADS]
    if bad_threads or not cfg.evaluate.threads:
        raise PipelineError(f"{where}: config key 'evaluate.threads' = {_thaw(cfg.evaluate.threads)!r}: "
                            f"expected a non-empty list of whole numbers 0..{MAX_THREADS}")
    if cfg.train.time_budget:
        parse_duration(cfg.train.time_budget, "train.time_budget")
    if not cfg.export.formats:
        raise PipelineError(f"{where}: config key 'export.formats' is empty")
    return cfg


def parse_duration(text, name):
    """'90m', '2h', '1h30m', '45s' or plain seconds -> seconds."""
    m = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", str(text))
    if not m or not any(m.groups()):
        raise PipelineError(f"{name} = {text!r}: expected a duration like 90m, 2h or 1h30m")
    h, mnt, s = (float(g) if g else 0.0 for g in m.groups())
    seconds = h * 3600 + mnt * 60 + s
    if seconds <= 0:
        raise PipelineError(f"{name} = {text!r}: must be longer than 0")
    return seconds


def read_toml(path):
    path = Path(path)
    try:
        with atomic.open_regular(path) as f:  # a FIFO would block forever: refused unread
            return tomllib.load(f)
    except FileNotFoundError:
        raise PipelineError(f"{path}: config file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: nested too deep
        raise PipelineError(f"{path}: invalid TOML ({first_line(exc)})") from None
    except OSError as exc:  # a folder, no permission, ...
        raise PipelineError(f"{path}: cannot read config ({exc.strerror or exc})") from None


def read_json(path):
    """A JSON file's content, or a PipelineError naming the file."""
    import json
    try:
        with atomic.open_regular(path) as f:  # a FIFO would block forever: refused unread
            return json.loads(f.read().decode())
    except FileNotFoundError:
        raise PipelineError(f"{path}: not found") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:  # RecursionError: nested too deep
        raise PipelineError(f"{path}: not readable JSON ({first_line(exc)})") from None


def from_dict(raw, where="config"):
    """A checked, frozen Config from a plain nested dict (a TOML file, a config.resolved.json)."""
    return _check_whole(_build_root(raw, where), where)


def _build_root(raw, where):
    if not isinstance(raw, dict):
        raise PipelineError(f"{where}: expected a table of sections")
    fields = {f.name: f for f in dataclasses.fields(Config)}
    for name in raw:
        if name not in fields:
            raise _unknown(where, name, list(fields))
    return Config(**{name: _build(fields[name].type, value, where, name) for name, value in raw.items()})


def load(path=None, overrides=()):
    """The config file (default pipeline.toml) with `overrides` [(dotted key, value), ...] on top."""
    path = Path(path or DEFAULT_CONFIG)
    raw = read_toml(path)
    for dotted, value in overrides:
        _set_key(raw, dotted, value, where=str(path))
    return from_dict(raw, where=str(path))


def _set_key(raw, dotted, value, where):
    parts = dotted.split(".")
    if parts[0] == "recipe":  # a recipe flag changes the preset train.preset selects
        preset = raw.get("train", {}).get("preset", Train.preset)
        parts = ["train", "presets", preset, *parts[1:]]
    node = raw
    for i, p in enumerate(parts[:-1]):
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise PipelineError(f"--set {dotted}: {'.'.join(parts[:i + 1])!r} is not a section")
    node[parts[-1]] = value


def _parse_set(item):
    if "=" not in item:
        raise PipelineError(f"--set {item!r}: expected section.key=VALUE")
    dotted, raw = item.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word is a string
    return dotted.strip(), value


def add_config_args(parser: argparse.ArgumentParser):
    parser.add_argument("--config", default=None, help="config file (default: pipeline.toml)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override any config key (VALUE is TOML); repeatable")
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow's start-up logs")


def given_flags(args):
    """(dotted key, value) of every config flag the user gave, --set items first, then dotted flags."""
    items = [_parse_set(item) for item in getattr(args, "set", None) or []]
    items += [(dest, value) for dest, value in vars(args).items() if "." in dest and value is not None]
    return items


def from_args(args):
    """The resolved config: file, then --set items, then every dotted flag that was given."""
    return load(getattr(args, "config", None), given_flags(args))


def with_recipe(cfg, **changes):
    """A copy of `cfg` whose selected recipe has `changes` (checked like any other value)."""
    raw = cfg.to_dict()
    raw["train"]["presets"][cfg.train.preset].update(changes)
    return from_dict(raw, where="recipe")


def write_resolved(cfg, folder):
    """Record the config an output was made with, beside it."""
    atomic.write_json(Path(folder) / "config.resolved.json", cfg.to_dict())


def project_path(p):
    """Relative paths in the config are relative to the project root, not the cwd."""
    p = Path(p).expanduser()
    return p if p.is_absolute() else ROOT / p


def describe():
    """Every key with its default and meaning: the README's config table."""
    rows = []
    for section in dataclasses.fields(Config):
        for f in dataclasses.fields(section.type):
            default = f.default if f.default is not dataclasses.MISSING else _thaw(f.default_factory())
            rows.append((f"{section.name}.{f.name}", default, f.metadata["help"]))
    return rows

