"""python -m evaluate: score every artifact in the manifest, measure latency, gate, write reports/."""
import argparse
import sys

from pipeline import config, console
from pipeline.errors import PipelineError, fail_cleanly, printable, terminate_like_interrupt


def say(text):
    """Progress and gate lines quote artifact errors, which can quote a manifest's paths: escaped, never raw."""
    print(printable(text), flush=True)


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m evaluate",
        description="Run every artifact of artifacts/manifest.json in its deployment runtime (Keras/TF, "
                    "SavedModel, onnxruntime CPU, LiteRT XNNPACK): accuracy on the test split, agreement with "
                    "the keras artifact, batch-1 latency percentiles, throughput, distance to the CPU's peak. "
                    "Reads only the manifest and the files it lists. Writes reports/evaluation.{json,md} and "
                    "charts; exits non-zero if an artifact fails or an accuracy gate ([gates]) is not met. "
                    "Latency is never gated.")
    p.add_argument("--manifest", dest="evaluate.manifest", metavar="PATH",
                   help="manifest.json (default: evaluate.manifest)")
    p.add_argument("--report-dir", dest="evaluate.report_dir", metavar="DIR",
                   help="where evaluation.json/.md and the charts go (default: reports)")
    p.add_argument("--limit", dest="evaluate.limit", type=int, metavar="N",
                   help="only N test images spread evenly over the split (a quick look: needs --no-gates)")
    p.add_argument("--latency-runs", dest="evaluate.latency_runs", type=int, metavar="N",
                   help="batch-1 runs timed per thread count, after warm-up")
    p.add_argument("--baseline", dest="evaluate.baseline", metavar="EVALUATION_JSON",
                   help="compare with an earlier report: fail on an accuracy regression, write diff.md")
    p.add_argument("--profile", dest="evaluate.profile", action="store_const", const=True,
                   help="also profile each artifact at batch 1 / 1 thread with its runtime's own profiler: "
                        "top operators by time in the report")
    p.add_argument("--calibration-sweep", action="store_true",
                   help="also re-quantize onnx_fp32 with each calibration method and 25-1000 calibration images "
                        "and score each on the test split: reports/calibration_sweep.{md,png} (~5 min)")
    p.add_argument("--no-latency", action="store_true", help="accuracy and throughput only")
    p.add_argument("--no-gates", action="store_true",
                   help="report only: check no gate (the exit status then says nothing about accuracy)")
    config.add_config_args(p)
    return p


# SIGTERM stops evaluate as Ctrl-C does: the running worker is killed, the temp folder (test images, jobs)
# removed and reports/ (written last) left as it was; one `error:` line, exit status 143.
@fail_cleanly
@terminate_like_interrupt
def main(argv=None):
    args = build_parser().parse_args(argv)
    cfg = config.from_args(args)
    if cfg.evaluate.limit and not args.no_gates:
        raise PipelineError(f"--limit {cfg.evaluate.limit}: the gates compare with accuracies measured on the "
                            "full test split; add --no-gates for a quick look")
    if args.no_gates and cfg.evaluate.baseline:
        raise PipelineError("--baseline and --no-gates contradict each other")
    console.start_tensorflow(args.verbose)
    from evaluate.run import evaluate_all
    result = evaluate_all(cfg, latency=not args.no_latency, gates_on=not args.no_gates, progress=say)
    if args.calibration_sweep:
        from evaluate import calibration_sweep
        calibration_sweep.run(cfg, progress=say)
    for line in result["gate_failures"]:
        print(printable(line), file=sys.stderr)
    if not result["passed"]:
        print(f"evaluate: {len(result['gate_failures'])} gate(s) failed", file=sys.stderr)
        sys.exit(1)
    print(f"evaluate: all {len(result['gates'])} gates passed" if result["gates_checked"]
          else "evaluate: report written; no gate checked (--no-gates)")


if __name__ == "__main__":
    main()
