"""The one scorer of top-1 predictions: train's final metrics and every evaluation use it."""
import numpy as np

NUM_CLASSES = 10


def confusion(labels, top1):
    """Rows: true class, columns: predicted class."""
    m = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    np.add.at(m, (np.asarray(labels), np.asarray(top1)), 1)
    return m


def score(labels, top1, reference_top1=None, reference_accuracy=None):
    """Accuracy, per-class accuracy, confusion matrix; agreement with and difference from the reference."""
    labels, top1 = np.asarray(labels), np.asarray(top1)
    m = confusion(labels, top1)
    per_class = (np.diag(m) / np.maximum(m.sum(axis=1), 1)).round(4).tolist()
    out = {"images": int(len(labels)), "correct": int((top1 == labels).sum()),
           "accuracy": float((top1 == labels).mean()), "per_class_accuracy": per_class,
           "confusion": m.tolist(), "agreement": None, "diff_pp": None}
    if reference_top1 is not None:
        out["agreement"] = float((top1 == np.asarray(reference_top1)).mean())
    if reference_accuracy is not None:
        out["diff_pp"] = round((out["accuracy"] - reference_accuracy) * 100, 3)
    return out
