"""Top-1 predictions over the test split, and the scores evaluate reports from them."""
import time

import numpy as np

from pipeline.runtimes import check_output

NUM_CLASSES = 10


def predict_top1(name, runner, images, batch=64, progress=print):
    """(top-1 class per image, images/s over the whole pass at this batch size).

    A runner that cannot take a batch is fed one image at a time. The last, short batch
    is padded to `batch` so a resized interpreter is not re-allocated for it.
    """
    batch = batch if runner.batchable else 1
    n = len(images)
    top1 = np.empty(n, np.int64)
    started = last_print = time.perf_counter()
    for start in range(0, n, batch):
        chunk = np.asarray(images[start:start + batch])
        short = len(chunk)
        if short < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - short, axis=0)])
        probs = check_output(name, runner.predict(chunk), batch)
        top1[start:start + short] = probs[:short].argmax(axis=1)
        now = time.perf_counter()
        if progress and (now - last_print > 5 or start + short == n):
            last_print = now
            progress(f"  {name}: {start + short}/{n} test images ({(start + short) / (now - started):.0f} img/s)")
    seconds = time.perf_counter() - started
    return top1, {"batch": batch, "images": n, "seconds": round(seconds, 3),
                  "images_per_s": round(n / seconds, 1)}


def confusion(labels, top1):
    """Rows: true class, columns: predicted class."""
    m = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    np.add.at(m, (labels, top1), 1)
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
