"""Top-1 predictions over the test split, and the scores evaluate reports from them."""
import time

import numpy as np

from pipeline.runtimes import check_output



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
