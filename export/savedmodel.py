"""The float32 Keras copy (.h5) and the SavedModel (serving_default signature, TF Serving layout)."""
import tensorflow as tf

from pipeline.model import INPUT_NAME, OUTPUT_NAME


def image_spec():
    """Raw RGB 0..255, NHWC, dynamic batch: what every artifact takes."""
    return tf.TensorSpec([None, 32, 32, 3], tf.float32, name=INPUT_NAME)


def static_image_spec(batch):
    """The same input with a fixed batch: what a phone's models take."""
    return tf.TensorSpec([batch, 32, 32, 3], tf.float32, name=INPUT_NAME)


def float_spec(name, shape):
    return {"name": name, "dtype": "float32", "shape": shape, "quantization": None}


def keras_specs():
    return float_spec(INPUT_NAME, [None, 32, 32, 3]), float_spec(OUTPUT_NAME, [None, 10])


def write_keras(model, path):
    """The float32 model as .h5 (what was exported, whatever policy the checkpoint was trained under)."""
    model.save(path)


def write_saved_model(model, path, spec=None):
    """`tf.saved_model.load(path).signatures["serving_default"](image=x)["probabilities"]`.

    TF Serving expects `<model>/<version>/saved_model.pb`; point it at a folder that holds
    this one as `1/`. Saved with `tf.saved_model.save` on a plain tf.Module (variables in
    model order, no Keras code): Keras' ExportArchive orders variables differently from
    run to run, which changes the bytes.
    """
    import hashlib
    from tensorflow.core.protobuf import fingerprint_pb2

    serve = tf.function(lambda image: {OUTPUT_NAME: model(image, training=False)},
                        input_signature=[spec or image_spec()])
    module = tf.Module()
    module.weights = [v.value for v in model.variables]  # the tf.Variables behind Keras' variables
    module.serve = serve
    tf.saved_model.save(module, str(path), signatures={"serving_default": serve.get_concrete_function()})
    # fingerprint.pb carries a random uuid; derive it from the content hashes instead, so the
    # same model gives the same bytes (TF only uses it to tell SavedModels apart).
    fp_path = path / "fingerprint.pb"
    if fp_path.exists():
        fp = fingerprint_pb2.FingerprintDef.FromString(fp_path.read_bytes())
        fp.uuid = str(int(hashlib.sha256(f"{fp.saved_model_checksum}/{fp.checkpoint_hash}".encode())
                          .hexdigest()[:30], 16))
        fp_path.write_bytes(fp.SerializeToString(deterministic=True))


def build_keras(exporter, row, path):
    write_keras(exporter.model, path)


def build_saved_model(exporter, row, path):
    write_saved_model(exporter.model, path)
