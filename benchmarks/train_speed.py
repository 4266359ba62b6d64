"""Training throughput of the `seed` model on this CPU: precision x batch x threads x input feed, one run.

  python benchmarks/train_speed.py                      # this CPU's table -> benchmarks/results/train_cpu_<cpu>.md
  python benchmarks/train_speed.py --steps 6 --quick    # a short look (fewer variants and steps)
  python benchmarks/train_speed.py --max-isa AVX512_CORE_VNNI   # oneDNN limited to Ice Lake's instructions
                                                        # (no bf16): -> train_cpu_<cpu>-isa-avx512_core_vnni.md

Each variant runs in its own process (TensorFlow's thread pools are fixed at start-up) and
times `steps` training steps of the product's own training model (train.loop.build_trainable:
augmentation + network + the `fast` recipe's optimizer and loss) after a warm-up that includes
graph tracing. The same run measures this machine's matmul peak in float32 and bfloat16, so
every variant is reported as images/s, seconds per 45,000-image epoch, and share of the
float32 peak: ratios within one run, since these machines are noisy.
"""
import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

EPOCH_IMAGES = 45_000
TRAIN_FLOP_PER_IMAGE = 3 * 288.3e6  # forward 288.3 MFLOP (TF profiler, see BENCHMARKS.md); backward ~2x forward

# name -> variant; the first is the `fast` preset as it ran before this benchmark (float32, numpy feed,
# TensorFlow's default thread pools, Keras' unfused batch norm); the rest use tf.data and, unless named,
# one inter-op thread (train.inter_op_threads) and the fused batch norm (train.fused_batchnorm).
_BASE = dict(policy="mixed_bfloat16", batch=512, intra=0, inter=1, feed="tfdata", augment=True, fused=True)
VARIANTS = {
    "fp32 b512 (old default)":    dict(_BASE, policy="float32", inter=0, feed="numpy", fused=False),
    "fp32 b512 unfused BN":       dict(_BASE, policy="float32", fused=False),
    "fp32 b512":                  dict(_BASE, policy="float32"),
    "fp32 b512 default threads":  dict(_BASE, policy="float32", inter=0),
    "fp32 b256":                  dict(_BASE, policy="float32", batch=256),   # batch size where bf16 is not native
    "fp32 b1024":                 dict(_BASE, policy="float32", batch=1024),
    "bf16 b256":                  dict(_BASE, batch=256),
    "bf16 b512 (default)":        dict(_BASE),
    "bf16 b1024":                 dict(_BASE, batch=1024),
    "bf16 b512 unfused BN":       dict(_BASE, fused=False),
    "bf16 b512 default threads":  dict(_BASE, inter=0),
    "bf16 b512 no augment":       dict(_BASE, augment=False),
}
QUICK = ("fp32 b512 (old default)", "bf16 b512 (default)")


def _setup_tf(intra, inter):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(intra)
    tf.config.threading.set_inter_op_parallelism_threads(inter)
    return tf


def peak_gflops(dtype, seconds=1.5, n=2048):
    """Matmul GFLOP/s of this process's thread pool in `dtype` (the roof the convolutions run under)."""
    tf = _setup_tf(0, 0)
    a = tf.random.normal((n, n), dtype=tf.float32)
    a = tf.cast(a, dtype)
    mm = tf.function(lambda x: tf.reduce_sum(tf.cast(tf.matmul(x, x), tf.float32)))
    mm(a).numpy()
    runs, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        mm(a).numpy()
        runs += 1
    return 2 * n ** 3 * runs / (time.perf_counter() - t0) / 1e9


def onednn_isa():
    """The instruction set oneDNN says it dispatches to in this process (its verbose `info,cpu,isa` line),
    after one small bf16 convolution."""
    os.environ["ONEDNN_VERBOSE"] = "1"
    tf = _setup_tf(0, 0)
    import tempfile
    with tempfile.TemporaryFile("w+") as log:
        saved = os.dup(1)
        os.dup2(log.fileno(), 1)  # oneDNN prints to the C stdout
        try:
            x = tf.cast(tf.ones((1, 8, 8, 16)), tf.bfloat16)
            tf.nn.conv2d(x, tf.cast(tf.ones((3, 3, 16, 16)), tf.bfloat16), 1, "SAME").numpy()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        log.seek(0)
        lines = [l for l in log.read().splitlines() if ",info,cpu,isa:" in l]
    return lines[0].split("isa:", 1)[1].strip() if lines else "not reported"


def one_variant(v, steps, warmup=3):
    tf = _setup_tf(v["intra"], v["inter"])
    import keras
    import numpy as np
    from pipeline import recipe as recipe_mod
    from train.loop import build_trainable, without_autotune
    from pipeline import config as config_mod

    keras.mixed_precision.set_global_policy(v["policy"])
    recipe = dataclasses.replace(config_mod.load().train.presets["fast"], batch_size=v["batch"])
    n = v["batch"] * steps
    net, wrapper = build_trainable("seed", recipe, steps_per_epoch=steps, fused_batchnorm=v["fused"])
    if not v["augment"]:  # the network alone: what the augmentation layer costs
        wrapper = keras.Model(net.inputs, net.outputs)
        wrapper.compile(optimizer=recipe_mod.optimizer(recipe, steps), loss=recipe_mod.loss(recipe))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 32, 32, 3)).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, n)]

    def feed(count):
        if v["feed"] == "numpy":
            return dict(x=x[: count * v["batch"]], y=y[: count * v["batch"]], batch_size=v["batch"])
        ds = tf.data.Dataset.from_tensor_slices((x[: count * v["batch"]], y[: count * v["batch"]]))
        return dict(x=without_autotune(ds.batch(v["batch"]).prefetch(2)))

    class StepClock(keras.callbacks.Callback):
        """First step's start to last step's end: what fit spends after it (tearing down the
        iterator) is not training, and the numpy feed's autotuned tf.data can wait there idle."""
        def on_train_batch_begin(self, batch, logs=None):
            self.start = getattr(self, "start", None) or time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.end = time.perf_counter()

    wrapper.fit(**feed(warmup), epochs=1, verbose=0)
    clock = StepClock()
    wrapper.fit(**feed(steps), epochs=1, verbose=0, callbacks=[clock])
    seconds = clock.end - clock.start
    return {"images_per_s": n / seconds, "step_s": seconds / steps}


def cpu_slug():
    """vendor-family-model of this CPU, e.g. amd-f26-m2 or intel-f6-m106: one results file per CPU seen
    (a VM's model name alone, "AMD EPYC", does not tell a Zen 4 from a Zen 5)."""
    from pipeline import machine
    info = machine._cpuinfo()  # the project's one /proc/cpuinfo reader (first value per key)
    vendor = {"AuthenticAMD": "amd", "GenuineIntel": "intel"}.get(info.get("vendor_id"), platform.machine())
    return f"{vendor}-f{info.get('cpu family', 'x')}-m{info.get('model', 'x')}"


def auto_check(rows):
    """What `train.mixed_precision = "auto"` picks on this CPU against the faster of the float32 and bf16
    default-recipe variants measured in this run (None when the run did not time both)."""
    os.environ["KERAS_BACKEND"] = "tensorflow"  # the variants' backend (set before Keras is imported)
    from train.loop import policy_for
    measured = {VARIANTS[n]["policy"]: r["images_per_s"] for n, r in rows if n in ("fp32 b512", "bf16 b512 (default)")}
    if len(measured) < 2:
        return None
    picked, fastest = policy_for("auto"), max(measured, key=measured.get)
    return (f"`train.mixed_precision = \"auto\"` picks **{picked}** on this CPU; measured here at batch 512 with "
            f"the fused batch norm: float32 {measured['float32']:.0f} img/s, mixed_bfloat16 "
            f"{measured['mixed_bfloat16']:.0f} img/s, so the fastest is {fastest}: "
            + ("auto picks it." if picked == fastest else "**auto does not pick it.**"))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10, help="timed steps per variant (after a 3-step warm-up)")
    p.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    p.add_argument("--only", action="append", help="run only this variant (repeatable)")
    p.add_argument("--out", default=None, help="default: benchmarks/results/train_cpu_<cpu>.md, one file per CPU")
    p.add_argument("--max-isa", default=None, metavar="ONEDNN_ISA",
                   help="cap oneDNN's instruction set (ONEDNN_MAX_CPU_ISA), e.g. AVX512_CORE_VNNI: this CPU "
                        "without its bf16 instructions; the run fails unless oneDNN reports the cap")
    p.add_argument("--_one", help=argparse.SUPPRESS)
    p.add_argument("--_isa", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--_peak", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._one:
        print(json.dumps(one_variant(json.loads(args._one), args.steps)))
        return
    if args._peak:
        print(json.dumps(peak_gflops(args._peak)))
        return
    if args._isa:
        print(json.dumps(onednn_isa()))
        return
    if args.max_isa:  # every variant's process inherits it; native_bf16() (so `auto`) reads it too
        os.environ["ONEDNN_MAX_CPU_ISA"] = args.max_isa

    def child(*extra):
        out = subprocess.run([sys.executable, __file__, "--steps", str(args.steps), *extra], cwd=ROOT,
                             check=True, capture_output=True, text=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    names = args.only or (QUICK if args.quick else list(VARIANTS))
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        sys.exit(f"error: unknown variant {unknown[0]!r}; known: {', '.join(VARIANTS)}")
    onednn = child("--_isa")
    from pipeline import machine
    if args.max_isa and not machine.native_bf16() and "bfloat16" in onednn.lower():  # the cap did not take
        sys.exit(f"error: --max-isa {args.max_isa}: oneDNN still reports {onednn!r}; is the name one of oneDNN's "
                 "(e.g. AVX512_CORE_VNNI, AVX2)?")
    print(f"oneDNN: {onednn}", flush=True)
    peaks = {dt: child("--_peak", dt) for dt in ("float32", "bfloat16")}
    print(f"matmul peak (all cores): float32 {peaks['float32']:.0f} GFLOP/s, bfloat16 {peaks['bfloat16']:.0f} GFLOP/s",
          flush=True)
    rows = []
    for name in names:
        t0 = time.perf_counter()
        r = child("--_one", json.dumps(VARIANTS[name]))
        rows.append((name, r))
        print(f"{name:28s} {r['images_per_s']:7.0f} img/s  {EPOCH_IMAGES / r['images_per_s']:6.0f} s/epoch  "
              f"({time.perf_counter() - t0:.0f}s)", flush=True)
    base = rows[0][1]["images_per_s"]
    described = machine.describe()
    cpu = described["cpu"]
    isa = ", ".join(f for f in ("avx512_bf16", "avx512_vnni", "amx_bf16") if f in described["isa_flags"])
    cap = machine.onednn_isa_cap()
    capped = f" under `ONEDNN_MAX_CPU_ISA={cap}`" if cap else ""
    lines = [f"## CPU training throughput ({time.strftime('%Y-%m-%d')})", "",
             f"Command: `python benchmarks/train_speed.py --steps {args.steps}"
             + (f" --max-isa {args.max_isa}" if args.max_isa else "") + f"`. Machine: {cpu} ({cpu_slug()}), "
             f"{described['cores']} cores ({isa}). oneDNN's instruction set{capped}, as it reports it: {onednn}. "
             "Model `seed` (792,330 params), recipe `fast`, TensorFlow backend; "
             f"{args.steps} timed steps per variant (first step's start to last step's end) after a 3-step warm-up, "
             "each variant in its own process.",
             f"Matmul peak measured in the same run (2048x2048, all cores): float32 {peaks['float32']:.0f} GFLOP/s, "
             f"bfloat16 {peaks['bfloat16']:.0f} GFLOP/s. Training FLOPs counted as 3x the 288.3 MFLOP forward pass.", "",
             "| variant | policy | batch | intra/inter threads | feed | augment | BN | images/s | s per 45k epoch "
             "| x old default | share of fp32 peak | share of its precision's peak |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in rows:
        v = VARIANTS[name]
        ips = r["images_per_s"]
        threads = f"{v['intra'] or 'auto'}/{v['inter'] or 'auto'}"
        lines.append(f"| {name} | {v['policy']} | {v['batch']} | {threads} | {v['feed']} | {'yes' if v['augment'] else 'no'} | {'fused' if v['fused'] else 'Keras ops'} "
                     f"| {ips:.0f} | {EPOCH_IMAGES / ips:.0f} | {ips / base:.2f} | "
                     f"{ips * TRAIN_FLOP_PER_IMAGE / 1e9 / peaks['float32']:.0%} | "
                     f"{ips * TRAIN_FLOP_PER_IMAGE / 1e9 / peaks['bfloat16' if 'bfloat16' in v['policy'] else 'float32']:.0%} |")
    check = auto_check(rows)
    if check:
        lines += ["", check]
    suffix = f"-isa-{args.max_isa.lower()}" if args.max_isa else ""
    args.out = args.out or str(ROOT / "benchmarks" / "results" / f"train_cpu_{cpu_slug()}{suffix}.md")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
