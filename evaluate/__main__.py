"""python -m evaluate: score every artifact in the manifest, measure latency, gate, write reports/."""
import argparse
import sys

from pipeline import config
from pipeline.errors import fail_cleanly


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m evaluate",
        description="Run every artifact of artifacts/manifest.json in its deployment runtime (Keras/TF, "
                    "SavedModel, onnxruntime CPU, LiteRT XNNPACK): accuracy on the test split, agreement with "
                    "the keras reference, batch-1 latency percentiles, throughput, distance to the CPU's peak. "
                    "Writes reports/evaluation.{json,md} and charts; exits non-zero if an artifact fails or an "
                    "accuracy gate ([gates] in the config) is not met. Latency is never gated.")
    p.add_argument("--manifest", dest="evaluate.manifest", default=None, metavar="PATH",
                   help="manifest.json (default: config evaluate.manifest)")
    p.add_argument("--report-dir", dest="evaluate.report_dir", default=None, metavar="DIR",
                   help="where evaluation.json/.md and the charts go (default: reports)")
    p.add_argument("--limit", dest="evaluate.limit", type=int, default=None, metavar="N",
                   help="only N test images spread evenly over the split (quick runs; the model-card gate is skipped)")
    p.add_argument("--latency-runs", dest="evaluate.latency_runs", type=int, default=None, metavar="N",
                   help="batch-1 runs timed per thread count, after warm-up")
    p.add_argument("--no-latency", action="store_true", help="accuracy and throughput only")
    config.add_config_args(p)
    return p


@fail_cleanly
def main(argv=None):
    args = build_parser().parse_args(argv)
    cfg = config.from_args(args)
    from evaluate.run import evaluate_all
    result = evaluate_all(cfg, latency=not args.no_latency)
    for line in result["gate_failures"]:
        print(line, file=sys.stderr)
    if not result["passed"]:
        print(f"evaluate: {len(result['gate_failures'])} gate(s) failed", file=sys.stderr)
        sys.exit(1)
    print(f"evaluate: all {len(result['gates'])} gates passed")


if __name__ == "__main__":
    main()
