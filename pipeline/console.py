"""A quiet console: on a machine without a GPU, TensorFlow's native start-up lines ("Could not find
cuda drivers", oneDNN notices, absl's pre-init warning) read like failures. They are written by
C++ straight to file descriptor 2, before any Python logging setting applies, so the only way to
hide them is to point fd 2 elsewhere while TensorFlow starts. `--verbose` keeps them.
"""
import contextlib
import os
import sys


@contextlib.contextmanager
def native_stderr_silenced():
    """fd 2 goes to /dev/null inside the block (Python's own sys.stderr is flushed around it)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


VERBOSE = [False]  # set once by start_tensorflow; read by quiet_native


def quiet_native():
    """Hide native chatter inside the block (the TFLite converter's "fully_quantize: 0, ...", LiteRT's
    "Created TensorFlow Lite XNNPACK delegate") unless --verbose; Python errors still propagate."""
    return contextlib.nullcontext() if VERBOSE[0] else native_stderr_silenced()


def start_tensorflow(verbose, threads=None, before_first_op=None):
    """Import TensorFlow with its start-up chatter hidden (unless verbose), setting its thread pools
    (intra, inter; 0 = TensorFlow's choice) and calling `before_first_op` first: thread pools and
    logical devices are fixed once the first op runs."""
    VERBOSE[0] = verbose
    if not verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    with (contextlib.nullcontext() if verbose else native_stderr_silenced()):
        import tensorflow as tf
        if threads:
            tf.config.threading.set_intra_op_parallelism_threads(threads[0])
            tf.config.threading.set_inter_op_parallelism_threads(threads[1])
        if before_first_op:
            before_first_op()
        tf.config.list_physical_devices()  # the device scan prints the CUDA lines
        tf.constant(0) + 0                 # the first op prints the oneDNN notice again
    if not verbose:
        import absl.logging  # Keras' "HDF5 is legacy" and similar warnings go through absl
        absl.logging.set_verbosity(absl.logging.ERROR)
