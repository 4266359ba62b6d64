"""A restricted unpickler for the official CIFAR-10 batches: plain data and numpy arrays only.

The official `cifar-10-python.tar.gz` stores pickled dicts. A pickle can run any code on
load, so a user's file is never given to plain `pickle.load`: only the few globals that
rebuild numpy arrays are allowed, everything else is refused.
"""
import io
import pickle

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    # pickle protocol 5 rebuilds contiguous arrays from a buffer (frombuffer refuses object dtype)
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    # protocols 0-2 written by Python 3 store bytes as _codecs.encode(str, "latin1")
    ("_codecs", "encode"),
}


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load global {module}.{name}")


def safe_loads(data: bytes):
    """Unpickle `data` allowing only dicts, lists, bytes, ints, strings and numpy arrays."""
    return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
