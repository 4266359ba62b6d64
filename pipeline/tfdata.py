"""tf.data options shared by the training feed and the QAT fine-tune."""


def without_autotune(ds):
    """`ds` with tf.data's autotuning off. Its model thread sleeps 10 ms, 20, 40 ... (up to 60 s) between
    runs, and about every other time an iterator is torn down (the end of fit) the process waits idle for
    the current sleep to end: half the timed fits of benchmarks/train_speed.py ran at "100 img/s". This
    pipeline has nothing to tune (no parallel map), so a fixed prefetch of 2 batches loses nothing."""
    import tensorflow as tf
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)
