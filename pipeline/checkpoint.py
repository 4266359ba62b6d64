"""Load a Keras checkpoint safely and as float32, whatever policy it was trained under.

- Nothing from the file runs: `safe_mode=True` refuses Lambda layers, unknown custom
  layers are refused by Keras' registry, and the architecture must be a known preset.
- A model saved under `mixed_bfloat16` (GPU training on JAX) is rebuilt from its own
  config with every dtype policy set to float32, then its weights are copied, so
  every converter sees a pure float32 graph.
"""
import json
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError, first_line
from pipeline.model import INPUT_SHAPE, PRESETS, build_preset


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


def _weight_shapes(model):
    return [tuple(w.shape) for w in model.weights]


def identify_preset(model, path="model"):
    """The preset whose weights have the same shapes, or a PipelineError."""
    shapes = _weight_shapes(model)
    for name in PRESETS:
        if _weight_shapes(build_preset(name)) == shapes:
            return name
    raise PipelineError(f"{path}: architecture matches no model preset ({', '.join(PRESETS)}); "
                        f"{model.count_params():,} params in {len(model.layers)} layers")


def load(path):
    """(float32 keras.Model, preset name) from an .h5 or .keras checkpoint."""
    import h5py
    import keras

    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{path}: checkpoint not found")
    if path.is_dir():
        raise PipelineError(f"{path}: is a folder, expected an .h5 or .keras file")
    if path.suffix == ".h5" and not h5py.is_hdf5(path):
        raise PipelineError(f"{path}: not an HDF5 file")
    try:
        model = keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many kinds for bad files; the first line says why
        raise PipelineError(f"{path}: cannot load as a Keras model ({first_line(exc)})") from None
    if not isinstance(model, keras.Model) or len(model.inputs) != 1 or len(model.outputs) != 1:
        raise PipelineError(f"{path}: expected a model with one input and one output")
    in_shape = tuple(model.inputs[0].shape[1:])
    if in_shape != INPUT_SHAPE:
        raise PipelineError(f"{path}: input shape {in_shape}, expected {INPUT_SHAPE}")
    out_shape = tuple(model.outputs[0].shape[1:])
    if out_shape != (10,):
        raise PipelineError(f"{path}: output shape {out_shape}, expected (10,)")
    preset = identify_preset(model, path)
    config = _float32_config(json.loads(json.dumps(model.get_config())))
    rebuilt = keras.Model.from_config(config)
    rebuilt.set_weights([np.asarray(w, dtype=np.float32) for w in model.get_weights()])
    return rebuilt, preset
