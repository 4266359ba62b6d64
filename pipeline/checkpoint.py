"""Load a Keras checkpoint safely and as float32, whatever policy it was trained under.

Nothing the file declares is built before its architecture is checked, and no code from it ever runs.
The architecture is read from the model config stored in the file (the .h5 `model_config` attribute,
the .keras archive's config.json, read with a byte cap) and must be a known preset layer for layer
(class, filters, units, kernel sizes, strides, pooling, activations, preprocessing constants, which
layers feed which): the preset that a `config.resolved.json` beside the checkpoint declares when the
folder is a training run (run.json beside it: run folders, models/*/), else any preset. So a Lambda or
custom layer, a Dense(100000) or a rewired graph is refused before anything is allocated. Then the
model is built from that config (it keeps the file's layer names, which per-layer error reports use)
with every dtype policy float32, and the file's weights are loaded into it: a model trained under
mixed_bfloat16 comes out float32, and NaN or infinite weights are refused.
"""
import contextlib
import functools
import json
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from pipeline.atomic import read_capped
from pipeline.errors import PipelineError, first_line
from pipeline.model import INPUT_SHAPE, PRESETS, build_preset

RESOLVED = "config.resolved.json"
RUN_MARKER = "run.json"  # train's run marker (train.run_folder): the folder is a training run
CONFIG_CAP = 4 << 20  # bytes: the seed model's config is ~60 KB
WEIGHTS_CAP = 64 << 20  # bytes a checkpoint's weights may take, in its file or as its datasets declare: seed's are 3.2 MB
WEIGHTS_MEMBER = "model.weights.h5"  # where a .keras archive keeps them
LAYER_KEYS = ("filters", "kernel_size", "strides", "padding", "use_bias", "units", "activation", "pool_size",
              "scale", "offset", "axis", "center")
LAYER_CLASSES = ("InputLayer", "Rescaling", "Conv2D", "BatchNormalization", "Activation", "Add",
                 "AveragePooling2D", "Flatten", "Dense")


def _float32_config(obj):
    """A copy of a Keras config with every dtype policy ("mixed_bfloat16", ...) set to float32."""
    if isinstance(obj, dict):
        if obj.get("class_name") in ("DTypePolicy", "FloatDTypePolicy"):
            return "float32"
        return {k: "float32" if k == "dtype" and isinstance(v, str) and "float16" in v
                else _float32_config(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_float32_config(v) for v in obj]
    return obj


def _sources(node, index):
    """Indices of the layers whose outputs an inbound-node structure reads (Keras' keras_history)."""
    if isinstance(node, dict):
        history = node.get("keras_history") if isinstance(node.get("keras_history"), list) else None
        found = [index.get(history[0], -1)] if history else []
        return found + [i for v in node.values() for i in _sources(v, index)]
    if isinstance(node, list):
        return [i for v in node for i in _sources(v, index)]
    return []


def _signature(model_config):
    """What the architecture is, layer by layer (class, shape-giving settings, which layers feed it),
    without names, dtypes or initializers."""
    layers = model_config["config"]["layers"]
    index = {layer.get("name", layer.get("config", {}).get("name")): i for i, layer in enumerate(layers)}
    out = []
    for layer in layers:
        c = layer.get("config", {})
        out.append((layer["class_name"], tuple((k, json.dumps(c.get(k), sort_keys=True)) for k in LAYER_KEYS if k in c),
                    tuple(_sources(layer.get("inbound_nodes", []), index))))
    return out


@functools.lru_cache(maxsize=None)
def _preset_signature(name):
    import keras
    with keras.device("cpu"):
        model = build_preset(name)
    return _signature({"config": json.loads(json.dumps(model.get_config()))})


def _read_config(path):
    """The model config stored in the checkpoint, read without building anything."""
    import h5py
    try:
        if path.suffix == ".h5":
            with h5py.File(path, "r") as f:
                raw = f.attrs.get("model_config")
            if raw is None:
                raise ValueError("no model config in the file (a weights-only or data file?)")
            raw = raw.encode() if isinstance(raw, str) else bytes(raw)
        else:
            with zipfile.ZipFile(path) as zf, zf.open("config.json") as member:
                raw = read_capped(member, CONFIG_CAP)  # the cap counts bytes read, not what the header says
        if raw is None or len(raw) > CONFIG_CAP:
            raise ValueError(f"model config larger than {CONFIG_CAP >> 20} MB")
        config = json.loads(raw)
        if not isinstance(config, dict) or not isinstance(config.get("config", {}).get("layers"), list):
            raise ValueError("the model config lists no layers")
        return config
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, RecursionError) as exc:
        raise PipelineError(f"{path}: cannot load as a Keras model ({first_line(exc)})") from None


@contextlib.contextmanager
def _weights_file(path):
    """The HDF5 file of the checkpoint's weights: the .h5 itself, or the .keras archive's model.weights.h5 read
    out with the byte cap into a temp file (so Keras never decompresses more than that), refused unless every
    dataset in it declares, all together, at most WEIGHTS_CAP bytes: Keras reads a stored weight whole before
    comparing its shape, and 400 KB of compressed zeros can declare a 40 GB one."""
    import h5py
    with tempfile.TemporaryDirectory(prefix="cifar-edge-weights-") as tmp:
        weights = path
        if path.suffix == ".keras":
            try:
                with zipfile.ZipFile(path) as zf, zf.open(WEIGHTS_MEMBER) as member:
                    data = read_capped(member, WEIGHTS_CAP)
            except (OSError, KeyError, zipfile.BadZipFile, EOFError) as exc:
                raise PipelineError(f"{path}: cannot read its {WEIGHTS_MEMBER} ({first_line(exc)})") from None
            if data is None:
                raise PipelineError(f"{path}: its {WEIGHTS_MEMBER} holds more than {WEIGHTS_CAP:,} bytes; refused")
            weights = Path(tmp) / WEIGHTS_MEMBER  # Keras picks the format from the name
            weights.write_bytes(data)
        declared = []
        try:
            with h5py.File(weights, "r") as f:
                f.visititems(lambda name, obj: declared.append((obj.size or 0) * obj.dtype.itemsize)
                             if isinstance(obj, h5py.Dataset) else None)  # size None: an h5py.Empty dataset
        except (OSError, ValueError, TypeError) as exc:
            raise PipelineError(f"{path}: cannot read its weights ({first_line(exc)})") from None
        if sum(declared) > WEIGHTS_CAP:
            raise PipelineError(f"{path}: its weights declare {sum(declared):,} bytes, over the {WEIGHTS_CAP:,}-byte "
                                "cap; refused before reading them")
        yield weights


def declared_preset(path):
    """The model preset the training config beside `path` declares, or None if there is none. Only a
    folder `python -m train` wrote (its run.json beside config.resolved.json: run folders, models/*/)
    declares one; an export's config.resolved.json describes the export, not the checkpoint."""
    resolved = Path(path).parent / RESOLVED
    if not resolved.is_file() or not (Path(path).parent / RUN_MARKER).is_file():
        return None
    from pipeline.config import read_json
    raw = read_json(resolved)
    preset = raw.get("model", {}).get("preset") if isinstance(raw, dict) and isinstance(raw.get("model"), dict) \
        else None
    if not isinstance(preset, str) or preset not in PRESETS:
        raise PipelineError(f"{resolved}: \"model.preset\" = {preset!r} is not a model preset ({', '.join(PRESETS)})")
    return preset


def _check_architecture(path, config):
    """The preset the file's architecture is, or a PipelineError naming what differs."""
    layers = config["config"]["layers"]
    for layer in layers:
        if not isinstance(layer, dict) or layer.get("class_name") not in LAYER_CLASSES:
            name = layer.get("class_name") if isinstance(layer, dict) else type(layer).__name__
            raise PipelineError(f"{path}: cannot load as a Keras model (layer class {name!r} is not one a model "
                                "preset uses; nothing from the file was run)")
    shape = next((l["config"].get("batch_shape") or l["config"].get("batch_input_shape")
                  for l in layers if l["class_name"] == "InputLayer"), None)
    if shape is None or tuple(shape[1:]) != INPUT_SHAPE:
        raise PipelineError(f"{path}: input shape {tuple(shape[1:]) if shape else None}, expected {INPUT_SHAPE}")
    last = layers[-1]
    units = last["config"].get("units") if last["class_name"] == "Dense" else None
    if units != 10:
        raise PipelineError(f"{path}: output shape {(units,)}, expected (10,)")
    declared = declared_preset(path)
    signature = _signature(config)
    if declared is not None:
        if signature != _preset_signature(declared):
            raise PipelineError(f"{path}: architecture is not the {declared!r} preset that "
                                f"{Path(path).parent / RESOLVED} declares")
        return declared
    for name in PRESETS:
        if signature == _preset_signature(name):
            return name
    raise PipelineError(f"{path}: architecture matches no model preset ({', '.join(PRESETS)}); "
                        f"{len(layers)} layers")


def load(path):
    """(float32 keras.Model, preset name) from an .h5 or .keras checkpoint."""
    import h5py
    import keras

    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{path}: checkpoint not found")
    if path.is_dir():
        raise PipelineError(f"{path}: is a folder, expected an .h5 or .keras file")
    if not path.is_file():
        raise PipelineError(f"{path}: not a regular file")
    if path.suffix not in (".h5", ".keras"):
        raise PipelineError(f"{path}: expected an .h5 or .keras checkpoint")
    if path.suffix == ".h5" and not h5py.is_hdf5(path):
        raise PipelineError(f"{path}: not an HDF5 file")
    if path.suffix == ".keras" and not zipfile.is_zipfile(path):
        raise PipelineError(f"{path}: cannot load as a Keras model (not a .keras zip archive)")
    config = _read_config(path)
    preset = _check_architecture(path, config)
    try:
        # The file's own config, now known to be the preset layer for layer (so nothing unknown is built),
        # with every dtype policy float32; built from it, the model keeps the file's layer names, which
        # export's per-layer error and the report key to.
        model = keras.Model.from_config(_float32_config(config["config"]))
    except Exception as exc:  # noqa: BLE001 - Keras raises many kinds for a config it cannot build
        raise PipelineError(f"{path}: cannot build its {preset!r} architecture ({first_line(exc)})") from None
    with _weights_file(path) as weights:
        try:
            model.load_weights(weights)
        except Exception as exc:  # Keras raises many kinds for bad files; the first line says why
            raise PipelineError(f"{path}: cannot load its weights into the {preset!r} preset "
                                f"({first_line(exc)})") from None
    if any(not np.all(np.isfinite(w)) for w in model.get_weights()):
        raise PipelineError(f"{path}: holds NaN or infinite weights")
    return model, preset
