"""Does the mobile example give the same top-1 as the evaluator for the int8 model, image by image?

    python examples/check_mobile_parity.py                        # all 10,000 test images
    python examples/check_mobile_parity.py --manifest artifacts/manifest.json --limit 500

The evaluator's side is pipeline.runtimes.TFLiteRunner through evaluate.accuracy.predict_top1
(batched, exactly as `python -m evaluate` runs it); the app's side is
examples/litert_mobile.MobileClassifier on the mobile bundle (model_spec.json, one invoke per
image, ARGB bitmap -> uint8 tensor -> dequantized output). The bundle must hold the same
int8 file as the manifest (sha256 checked); without --bundle it is built into a temp folder.
Exit 1 when top-1 agreement is below --min-agreement (default 1.0: every image the same).
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "examples")]


from pipeline import atomic, config, evalset, manifest, sampling  # noqa: E402
from pipeline.artifacts import ARTIFACTS  # noqa: E402
from pipeline.errors import PipelineError, fail_cleanly  # noqa: E402

ARTIFACT = next(row.name for row in ARTIFACTS.values() if row.mobile == "int8")  # the bundle's default model


def evaluator_top1(manifest_path, entry, images, threads):
    from evaluate.accuracy import predict_top1
    from pipeline.runtimes import TFLiteRunner
    runner = TFLiteRunner(entry["name"], manifest.verify(manifest_path, entry), threads)
    top1, _ = predict_top1(entry["name"], runner, images, progress=lambda s: print(s, flush=True))
    return top1


def mobile_top1(bundle, images, threads):
    from litert_mobile import MobileClassifier
    app = MobileClassifier(bundle, "int8", threads=threads)
    return app.classify_images(images, progress_every=1000).argmax(axis=1)


def check(manifest_path, bundle=None, limit=0, threads=1):
    """{"images", "agreement", "evaluator_accuracy", "mobile_accuracy", "disagreements": [index...]}."""
    manifest_path = Path(manifest_path)
    entry = manifest.find(manifest.read(manifest_path), ARTIFACT)
    test = evalset.load_test(config.load())
    idx = sampling.eval_subset(test.labels, limit)  # the same --limit images evaluate scores
    images, labels = test.images[idx], test.labels[idx]
    with tempfile.TemporaryDirectory() as scratch:
        if bundle is None:
            from export import mobile
            bundle = Path(scratch) / "mobile"
            mobile.build(manifest_path, bundle)
        spec = json.loads((Path(bundle) / "model_spec.json").read_text())["models"]["int8"]
        if atomic.sha256_file(Path(bundle) / spec["file"]) != entry["sha256"]:
            raise PipelineError(f"{bundle}: its int8 model is not the manifest's {ARTIFACT} (sha256 differs); "
                                f"rebuild it with `python -m export.mobile`")
        t0 = time.time()
        reference = evaluator_top1(manifest_path, entry, images, threads)
        t1 = time.time()
        app = mobile_top1(bundle, images, threads)
        t2 = time.time()
    same = app == reference
    return {"images": int(len(images)), "agreement": float(same.mean()),
            "evaluator_accuracy": float((reference == labels).mean()),
            "mobile_accuracy": float((app == labels).mean()),
            "evaluator_seconds": round(t1 - t0, 1), "mobile_seconds": round(t2 - t1, 1),
            "disagreements": idx[~same].tolist()}


@fail_cleanly
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--manifest", default=None, help="default: config evaluate.manifest")
    parser.add_argument("--bundle", default=None, help="mobile bundle folder (default: build one from the manifest)")
    parser.add_argument("--limit", type=int, default=0, help="N evenly spaced test images (0 = all 10,000)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--min-agreement", type=float, default=1.0)
    parser.add_argument("--out", default=None, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    manifest_path = Path(args.manifest) if args.manifest else config.project_path(config.load().evaluate.manifest)
    result = check(manifest_path, args.bundle, args.limit, args.threads)
    print(f"{result['images']} test images: top-1 agreement {result['agreement']:.2%} "
          f"({len(result['disagreements'])} differ); accuracy evaluator {result['evaluator_accuracy']:.2%}, "
          f"mobile example {result['mobile_accuracy']:.2%}; "
          f"{result['evaluator_seconds']}s batched vs {result['mobile_seconds']}s one at a time")
    if args.out:
        atomic.write_json(args.out, result)
    if result["agreement"] < args.min_agreement:
        print(f"error: agreement {result['agreement']:.4%} is below {args.min_agreement:.4%}; "
              f"first differing images: {result['disagreements'][:10]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
