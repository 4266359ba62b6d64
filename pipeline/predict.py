"""`python -m pipeline predict`: classify PNG/JPEG files with any artifact in the manifest.

    python -m pipeline predict photos/ cat.png                      # int8 TFLite, top-3
    python -m pipeline predict --artifact onnx_fp32 --json --top-k 5 cat.png

Images are read by pipeline/images.py (any size and mode -> 32x32 RGB, documented there).
Only the runtime the chosen artifact needs is imported: onnx -> onnxruntime, tflite ->
ai_edge_litert, saved_model/keras -> tensorflow. The artifact's sha256 is checked against
the manifest before it runs. A bad file is reported as `error: <file>: <problem>` on stderr
(and as {"file", "error"} with --json) while the other files are still classified; the exit
status is 1 when any input failed.
"""
import json
import sys
from pathlib import Path

import numpy as np

from pipeline import artifacts, config, console, images, manifest, runtimes
from pipeline.errors import PipelineError, printable

HELP = "classify PNG/JPEG images (files or folders) with an exported artifact"
DEFAULT_ARTIFACT = "tflite_int8"
BATCH = 256
MAX_THREADS = 1024  # as config's train.intra_op_threads


def add_arguments(parser):
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER",
                        help="PNG/JPEG files, or folders searched recursively for *.png, *.jpg, *.jpeg")
    parser.add_argument("--artifact", default=DEFAULT_ARTIFACT,
                        help=f"artifact name in the manifest (default: {DEFAULT_ARTIFACT})")
    parser.add_argument("--manifest", default=None,
                        help="manifest.json (default: config evaluate.manifest, artifacts/manifest.json)")
    parser.add_argument("--top-k", type=int, default=3, help="how many classes to list (default: 3)")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of one line per image")
    parser.add_argument("--threads", type=int, default=0,
                        help=f"runtime threads, 0..{MAX_THREADS}; 0 = the runtime's default")
    parser.add_argument("--serving-request", action="store_true",
                        help="print the TF Serving REST request body for the images instead (no model is run)")
    config.add_config_args(parser)


def load_classifier(manifest_path, entry, threads=0):
    """Verify the artifact's sha256, load it in its runtime; return f(uint8 NHWC) -> probabilities."""
    path = manifest.verify(manifest_path, entry)
    try:
        runner = runtimes.open_runner(entry, path, threads)
    except ImportError as exc:
        raise PipelineError(f"{entry['name']}: its runtime is not installed ({exc})") from None
    if runner.batchable:
        return runner.predict
    return lambda x: np.concatenate([runner.predict(image[None]) for image in x])


# ---------------------------------------------------------------- classify

def top_k(probabilities, labels, k):
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [{"label": labels[i], "probability": round(float(probabilities[i]), 6)} for i in order]


def classify(inputs, classifier, labels, k=3, progress=None, name="the model"):
    """One result per image, in input order: {file, label, probability, top_k} or {file, error}.
    Probabilities that are not finite (NaN, infinity) are refused: a PipelineError naming the model
    (`name`) and the first image, before anything is returned."""
    results, arrays, where = [], [], []
    for path, problem in images.expand(inputs):
        if problem is None:
            try:
                arrays.append(images.load(path))
                where.append(len(results))
            except images.ImageError as exc:
                problem = str(exc)
        results.append({"file": str(path), "error": problem} if problem else {"file": str(path)})
    for start in range(0, len(arrays), BATCH):
        probs = classifier(np.stack(arrays[start:start + BATCH]))
        if probs.shape[-1] != len(labels):
            raise PipelineError(f"the model outputs {probs.shape[-1]} classes but there are {len(labels)} labels")
        finite = np.isfinite(probs).all(axis=-1)
        if not finite.all():
            first = where[start + int(np.argmin(finite))]
            raise PipelineError(f"{name}: the model returned non-finite probabilities (NaN or infinity) for "
                                f"{results[first]['file']}; refused, no result was printed")
        for i, p in zip(where[start:start + BATCH], probs):
            ranked = top_k(p, labels, max(k, 1))
            results[i].update(label=ranked[0]["label"], probability=ranked[0]["probability"], top_k=ranked[:k])
        if progress:
            progress(min(start + BATCH, len(arrays)), len(arrays))
    return results


def serving_request(arrays, signature="serving_default"):
    """TF Serving's REST predict body (row format) for uint8 (32, 32, 3) images: raw RGB 0..255 as floats."""
    return {"signature_name": signature, "instances": np.asarray(arrays, np.float32).tolist()}


def format_line(result):
    if "error" in result:
        return f"{result['file']}: error: {result['error']}"
    ranked = ", ".join(f"{t['label']} {t['probability']:.1%}" for t in result["top_k"])
    return f"{result['file']}: {result['label']} ({result['probability']:.1%})  [{ranked}]"


def _print_serving_request(inputs):
    arrays, failed = [], False
    for path, problem in images.expand(inputs):
        try:
            if problem:
                raise images.ImageError(problem)
            arrays.append(images.load(path))
        except images.ImageError as exc:
            print(printable(f"error: {path}: {exc}"), file=sys.stderr)
            failed = True
    print(json.dumps(serving_request(arrays), allow_nan=False))
    return 1 if failed else 0


def run(args):
    if args.top_k < 1:
        raise PipelineError(f"--top-k {args.top_k}: must be at least 1")
    if not 0 <= args.threads <= MAX_THREADS:
        raise PipelineError(f"--threads {args.threads}: must be 0 (the runtime's default) to {MAX_THREADS}")
    if args.serving_request:
        return _print_serving_request(args.inputs)
    cfg = config.from_args(args)
    manifest_path = Path(args.manifest) if args.manifest else config.project_path(cfg.evaluate.manifest)
    data = manifest.read(manifest_path)
    entry = manifest.find(data, args.artifact)
    labels = manifest.read_labels(manifest_path, data)
    if artifacts.get(entry["name"]).runtime == "tensorflow":  # its start-up lines hidden, as every stage hides them
        console.start_tensorflow(args.verbose, (args.threads, args.threads))
    else:
        console.VERBOSE[0] = args.verbose  # console.quiet_native: LiteRT's native INFO line only with --verbose
    classifier = load_classifier(manifest_path, entry, args.threads)

    def progress(done, total):
        if total > 10 * BATCH:
            print(f"classified {done}/{total}", file=sys.stderr, flush=True)

    results = classify(args.inputs, classifier, labels, args.top_k, progress, name=entry["name"])
    for r in results:
        if "error" in r:
            print(printable(f"error: {r['file']}: {r['error']}"), file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=2, allow_nan=False))
    else:
        for r in results:
            if "error" not in r:
                print(printable(format_line(r)))  # a file name's control characters escaped, as in error lines
    return 1 if any("error" in r for r in results) else 0
