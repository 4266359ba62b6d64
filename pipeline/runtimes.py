"""One runner per artifact format, each in the runtime a user deploys it with.

A runner takes raw RGB uint8 images (N, 32, 32, 3) and returns float32 class
probabilities (N, 10). `batchable` says whether it takes any batch size; runners
that do not are fed one image at a time. Every loading problem (truncated file,
wrong input shape, ...) is a PipelineError naming the artifact.

Thread counts are fixed when the runtime starts (TensorFlow) or when the session
is made (onnxruntime, LiteRT), so evaluate opens one runner per thread count, each
in its own process (see evaluate/worker.py). export (parity) and predict use the same runners.
"""
import numpy as np

from pipeline import artifacts, console
from pipeline.errors import PipelineError, first_line

# pipeline.model.INPUT_SHAPE, repeated so the onnxruntime and LiteRT workers never import Keras.
INPUT_SHAPE = (32, 32, 3)
NUM_CLASSES = 10


def _check_shape(name, what, shape):
    """`shape` is the artifact's (batch, H, W, C) or (batch, classes); None/str dims are dynamic."""
    expected = INPUT_SHAPE if what == "input" else (NUM_CLASSES,)
    dims = tuple(int(d) if isinstance(d, (int, np.integer)) and d > 0 else None for d in shape)
    if len(dims) != len(expected) + 1 or dims[1:] != expected:
        shown = [d if isinstance(d, str) else int(d) if d is not None else None for d in shape]
        raise PipelineError(f"{name}: artifact {what} shape {shown}, expected [batch, "
                            f"{', '.join(map(str, expected))}]")
    return dims[0] is None  # a dynamic batch dimension




class KerasRunner:
    """The reference: the .h5 on Keras 3 / TensorFlow, loaded by pipeline.checkpoint (safe, float32)."""

    batchable = True

    def __init__(self, name, path, threads):
        import tensorflow as tf
        from pipeline import checkpoint
        self.model, self.preset = checkpoint.load(path)
        self._call = tf.function(lambda x: self.model(x, training=False), reduce_retracing=True)

    def predict(self, images):
        return np.asarray(self._call(images.astype(np.float32)), dtype=np.float32)


class SavedModelRunner:
    """tf.saved_model.load + the serving_default signature, as TF Serving runs it."""

    batchable = True

    def __init__(self, name, path, threads):
        from pipeline import graph_ops
        graph_ops.check_saved_model(path)  # its ops, read from saved_model.pb before any of it runs
        import tensorflow as tf
        try:
            loaded = tf.saved_model.load(str(path))
            self._fn = loaded.signatures["serving_default"]
        except Exception as exc:
            raise PipelineError(f"{name}: cannot load SavedModel {path} ({first_line(exc)})") from None
        self._keep = loaded  # the signature needs its object alive
        inputs = self._fn.structured_input_signature[1]
        if len(inputs) != 1:
            raise PipelineError(f"{name}: serving_default takes {len(inputs)} inputs, expected 1")
        (self._input, spec), = inputs.items()
        self.batchable = _check_shape(name, "input", spec.shape.as_list())
        self._tf = tf

    def predict(self, images):
        out = self._fn(**{self._input: self._tf.constant(images.astype(np.float32))})
        return np.asarray(next(iter(out.values())), dtype=np.float32)


def ort_session_options(fmt, threads):
    """onnxruntime SessionOptions for an artifact of format `fmt` (onnx | ort) at `threads` intra-op threads.
    An .ort file's saved runtime optimizations (export.ort_export: its QDQ -> QLinear* and Conv + Relu
    fusions) are replayed, as the phone app does: without them its int8 model runs as float Conv between
    Q/DQ pairs. onnxruntime replays them only when asked, "for trusted models". The sha256 check only ties
    the file to its manifest (which whoever swaps a file can rewrite too): what guards the replay is
    graph_ops.check_ort, which refuses any op off the allowlist, the replay's own included; a malformed
    replay record could still crash onnxruntime, in the worker process evaluate runs it in."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    if fmt == "ort":
        opts.add_session_config_entry("session.enable_saved_runtime_optimizations", "1")
    return opts


class OnnxRunner:
    """onnxruntime InferenceSession on the CPU provider with an explicit thread count."""

    format = "onnx"

    def _check_ops(self, path):
        from pipeline import graph_ops
        graph_ops.check_onnx(path)

    def __init__(self, name, path, threads):
        import onnxruntime as ort
        opts = ort_session_options(self.format, threads)
        self._check_ops(path)  # its ops, read from the file before a session is made
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise PipelineError(f"{name}: onnxruntime cannot load {path} ({first_line(exc)})") from None
        inp, = self.session.get_inputs()
        self._input = inp.name
        self.batchable = _check_shape(name, "input", inp.shape)
        _check_shape(name, "output", self.session.get_outputs()[0].shape)
        if inp.type != "tensor(float)":
            raise PipelineError(f"{name}: ONNX input type {inp.type}, expected tensor(float)")

    def predict(self, images):
        return self.session.run(None, {self._input: images.astype(np.float32)})[0].astype(np.float32)


class OrtRunner(OnnxRunner):
    """An .ort file (ONNX Runtime's flatbuffer format) in the same InferenceSession, its saved runtime
    optimizations replayed (ort_session_options)."""

    format = "ort"

    def _check_ops(self, path):
        from pipeline import graph_ops
        graph_ops.check_ort(path)  # read from the flatbuffer itself, as check_onnx reads an ONNX file


class TFLiteRunner:
    """LiteRT Interpreter (XNNPACK by default) with num_threads; uint8/int8 I/O via its quantization params."""

    def __init__(self, name, path, threads):
        from ai_edge_litert.interpreter import Interpreter
        self.name = name
        try:  # LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate" from C++ (no setting hides it)
            with console.quiet_native():
                # threads 0 = LiteRT's own default
                self.interpreter = Interpreter(model_path=str(path), num_threads=threads or None)
                self.interpreter.allocate_tensors()
        except Exception as exc:
            raise PipelineError(f"{name}: LiteRT cannot load {path} ({first_line(exc)})") from None
        inp, = self.interpreter.get_input_details()
        out = self.interpreter.get_output_details()[0]
        self._in, self._out = inp, out
        self.input_detail, self.output_detail = inp, out
        _check_shape(name, "input", inp["shape"])
        _check_shape(name, "output", out["shape"])
        self._batch = int(inp["shape"][0])
        # A batch-1 model whose signature leaves the batch open can be resized to any batch.
        self.batchable = int(inp["shape_signature"][0]) in (-1, 0) or self._batch != 1
        if inp["dtype"] not in (np.float32, np.uint8, np.int8):
            raise PipelineError(f"{name}: TFLite input dtype {np.dtype(inp['dtype']).name} is not supported")

    def _resize(self, batch):
        if batch != self._batch:
            self.interpreter.resize_tensor_input(self._in["index"], [batch, *INPUT_SHAPE])
            with console.quiet_native():
                self.interpreter.allocate_tensors()
            self._batch = batch

    def _quantize(self, images):
        dtype = self._in["dtype"]
        if dtype == np.float32:
            return images.astype(np.float32)
        scale, zero_point = self._in["quantization"]
        if not scale:
            raise PipelineError(f"{self.name}: quantized input without a scale")
        info = np.iinfo(dtype)
        q = np.round(images.astype(np.float32) / scale + zero_point)
        return np.clip(q, info.min, info.max).astype(dtype)

    def _dequantize(self, raw):
        if self._out["dtype"] == np.float32:
            return raw.astype(np.float32)
        scale, zero_point = self._out["quantization"]
        return ((raw.astype(np.float32) - zero_point) * scale).astype(np.float32)

    def predict(self, images):
        self._resize(len(images))
        self.interpreter.set_tensor(self._in["index"], self._quantize(images))
        self.interpreter.invoke()
        return self._dequantize(self.interpreter.get_tensor(self._out["index"]))


class MediaPipeRunner:
    """MediaPipe Tasks' ImageClassifier, the C++ task Android, iOS and web apps run, on a .tflite with
    metadata: it reads the input's normalisation and the class names from the file, as an app does. Runs
    in the mobile environment (pipeline/mobile_env.py), one image at a time, on its own threads."""

    batchable = False

    def __init__(self, name, path, threads):
        try:
            import mediapipe
            from mediapipe.tasks.python import BaseOptions, vision
        except ImportError:
            raise PipelineError(f"{name}: MediaPipe is not in this environment (its client runs in the mobile "
                                "environment: make venv-mobile)") from None
        options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(path)),
                                                max_results=NUM_CLASSES)  # every class's score
        try:
            self._classifier = vision.ImageClassifier.create_from_options(options)
        except Exception as exc:  # noqa: BLE001 - MediaPipe raises RuntimeError/ValueError with the reason
            raise PipelineError(f"{name}: MediaPipe's ImageClassifier refuses {path} ({first_line(exc)})") from None
        self._image = lambda x: mediapipe.Image(image_format=mediapipe.ImageFormat.SRGB, data=np.ascontiguousarray(x))
        self.class_names = None  # by class index, as the model's metadata names them

    def predict(self, images):
        probs, names = np.zeros((len(images), NUM_CLASSES), np.float32), [""] * NUM_CLASSES
        for i, image in enumerate(images):
            for c in self._classifier.classify(self._image(image)).classifications[0].categories:
                probs[i, c.index], names[c.index] = c.score, c.category_name
        self.class_names = names
        return probs

    def close(self):
        self._classifier.close()  # else its dispatcher fails at interpreter exit


RUNNERS = {"keras": KerasRunner, "saved_model": SavedModelRunner, "onnx": OnnxRunner, "ort": OrtRunner,
           "tflite": TFLiteRunner}
CLIENTS = {"mediapipe": MediaPipeRunner}  # the app-side clients (the table's `clients` column)


def configure_tensorflow(threads):
    """TensorFlow reads its thread counts once, before its first op: call this first."""
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def open_runner(entry, path, threads, client=None):
    """A runner for one manifest entry at `threads` threads (through `client`, one of CLIENTS, if given);
    PipelineError if it cannot load."""
    if client:
        return CLIENTS[client](f"{entry['name']}@{client}", path, threads)
    if artifacts.get(entry["name"]).runtime == "tensorflow":
        configure_tensorflow(threads)
    return RUNNERS[entry["format"]](entry["name"], path, threads)


def check_output(name, probs, batch):
    """Refuse outputs of the wrong shape or with NaN/inf, naming the artifact."""
    if probs.shape != (batch, NUM_CLASSES) or not np.all(np.isfinite(probs)):
        raise PipelineError(f"{name}: output {probs.shape} for {batch} images, expected ({batch}, 10), finite")
    return probs
