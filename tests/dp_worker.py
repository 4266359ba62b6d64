"""One process of tests/test_data_parallel_jax.py: a few SGD steps of a small Keras model on JAX.

  python tests/dp_worker.py OUT_DIR multi    # one of the processes KERAS_DISTRIBUTION_* describe
  python tests/dp_worker.py OUT_DIR single   # the reference: the same steps in one process

`multi` joins the mesh through train.loop._distribution and trains the model twice from the same
initial weights, fed two ways: `arrays` (this process's rows of every global batch, batch_size =
GLOBAL_BATCH // processes, auto_shard_dataset off) and `tfdata` (a tf.data.Dataset of the global
batches, which Keras rebatches and shards per process). `single` trains on the full global
batches without a distribution, and once more on process 0's rows alone (`shard0`: what a
process would learn without the cross-process gradient all-reduce, the test's control).
Writes OUT_DIR/weights_{feed}_p{process}.npy (every weight, flattened, concatenated) and
OUT_DIR/info_{mode}_p{process}.json (what this process saw of the cluster).
"""
import json
import os
import sys
import time
from pathlib import Path

T0 = time.perf_counter()

os.environ["KERAS_BACKEND"] = "jax"
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

SEED = 0
GLOBAL_BATCH = 16
STEPS = 6
LR = 0.1


def data():
    rng = np.random.default_rng(SEED)
    x = rng.normal(size=(GLOBAL_BATCH * STEPS, 8, 8, 3)).astype(np.float32)
    y = rng.integers(0, 10, size=GLOBAL_BATCH * STEPS)
    return x, y


def rows_of(process, processes):
    """Indices of `process`'s part of every global batch, in step order."""
    local = GLOBAL_BATCH // processes
    return np.concatenate([np.arange(s * GLOBAL_BATCH + process * local, s * GLOBAL_BATCH + (process + 1) * local)
                           for s in range(STEPS)])


def model():
    import keras
    keras.utils.set_random_seed(SEED)  # the same initial weights in every process and every run
    m = keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dense(10),
    ])
    m.compile(optimizer=keras.optimizers.SGD(LR, momentum=0.0),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return m


def flat(m):
    return np.concatenate([np.asarray(w, dtype=np.float32).ravel() for w in m.get_weights()])


def main(out, mode):
    import jax
    import keras
    from train.loop import _distribution

    out = Path(out)
    x, y = data()
    _, replicas = _distribution(mode == "multi")
    processes, process = jax.process_count(), jax.process_index()
    info = {"mode": mode, "process_count": processes, "process_index": process,
            "device_count": jax.device_count(), "local_device_count": jax.local_device_count(),
            "replicas": replicas, "steps": STEPS, "global_batch": GLOBAL_BATCH, "losses": {},
            "seconds": {"started": round(time.perf_counter() - T0, 1)}}
    runs = {}
    if mode == "multi":
        dist = keras.distribution.distribution()
        info["mesh_devices"] = [str(d) for d in dist.device_mesh.devices.ravel()]
        idx = rows_of(process, processes)
        runs["arrays"] = (lambda: setattr(dist, "auto_shard_dataset", False),
                          dict(x=x[idx], y=y[idx], batch_size=GLOBAL_BATCH // processes))
        import tensorflow as tf
        runs["tfdata"] = (lambda: setattr(dist, "auto_shard_dataset", True),
                          dict(x=tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)))
    else:
        runs["single"] = (lambda: None, dict(x=x, y=y, batch_size=GLOBAL_BATCH))
        idx = rows_of(0, 2)
        runs["shard0"] = (lambda: None, dict(x=x[idx], y=y[idx], batch_size=GLOBAL_BATCH // 2))
    for feed, (prepare, fed) in runs.items():
        prepare()
        m = model()
        if mode == "multi":
            kernel = m.weights[0].value  # a global jax.Array: replicated over the mesh of both processes
            info[f"{feed}_kernel_devices"] = len(kernel.sharding.device_set)
            info[f"{feed}_kernel_fully_addressable"] = bool(kernel.is_fully_addressable)
        history = m.fit(**fed, epochs=1, shuffle=False, verbose=0)
        info["losses"][feed] = [float(v) for v in history.history["loss"]]
        info[f"{feed}_optimizer_steps"] = int(keras.ops.convert_to_numpy(m.optimizer.iterations))
        np.save(out / f"weights_{feed}_p{process}.npy", flat(m))
        info["seconds"][feed] = round(time.perf_counter() - T0, 1)
    (out / f"info_{mode}_p{process}.json").write_text(json.dumps(info, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:3])
