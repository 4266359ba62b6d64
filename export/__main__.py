"""python -m export: a Keras checkpoint -> SavedModel, ONNX and TFLite artifacts + manifest.json."""
import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from pipeline import config  # noqa: E402
from pipeline.errors import fail_cleanly  # noqa: E402

FORMATS_HELP = ("keras, saved_model, onnx_fp32, onnx_int8, tflite_fp32, tflite_fp16, "
                "tflite_dynamic_int8, tflite_int8, tflite_qat_int8")


def parser():
    p = argparse.ArgumentParser(
        prog="python -m export", description=__doc__,
        epilog="Defaults come from [export] in pipeline.toml. Export fails, writing nothing, when an "
               "artifact's top-1 agreement with the Keras model is below min_parity_float / min_parity_int8.")
    p.add_argument("--checkpoint", dest="export.checkpoint", metavar="PATH",
                   help="Keras .h5/.keras checkpoint (default: export.checkpoint)")
    p.add_argument("--out-dir", dest="export.out_dir", metavar="DIR", help="output folder (default: artifacts)")
    p.add_argument("--formats", dest="export.formats", metavar="A,B",
                   type=lambda s: [f.strip() for f in s.split(",") if f.strip()],
                   help=f"comma-separated subset of: {FORMATS_HELP}")
    p.add_argument("--qat", dest="export.qat", action="store_const", const=True, default=None,
                   help="also write tflite_qat_int8 (quantization-aware fine-tune; slow on CPU)")
    p.add_argument("--qat-minutes", dest="export.qat_minutes", type=float, metavar="M",
                   help="wall-time budget of the QAT fine-tune (default: export.qat_minutes)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    config.add_config_args(p)
    return p


@fail_cleanly
def main(argv=None):
    args = parser().parse_args(argv)
    cfg = config.from_args(args)
    from export.run import export_all  # heavy imports after --help
    export_all(cfg, progress=not args.quiet)  # also writes config.resolved.json beside the manifest
    return 0


if __name__ == "__main__":
    main()
