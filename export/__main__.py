"""python -m export: a Keras checkpoint -> SavedModel, ONNX and TFLite artifacts + manifest.json."""
import argparse

from pipeline import config, console
from pipeline.artifacts import ARTIFACTS
from pipeline.errors import fail_cleanly


def _formats(text):
    return [f.strip() for f in text.split(",") if f.strip()]


def parser():
    p = argparse.ArgumentParser(
        prog="python -m export", description=__doc__,
        epilog="Defaults come from [export] in the config (pipeline/config.py declares them). Export fails, "
               "writing nothing, when an artifact's top-1 agreement with the Keras model is below its "
               "gates.min_parity_* key; the artifacts folder is replaced whole or not at all.")
    p.add_argument("--checkpoint", dest="export.checkpoint", metavar="PATH",
                   help="Keras .h5/.keras checkpoint (default: export.checkpoint)")
    p.add_argument("--out-dir", dest="export.out_dir", metavar="DIR", help="output folder (default: artifacts)")
    p.add_argument("--formats", dest="export.formats", metavar="A,B", type=_formats,
                   help=f"comma-separated subset of: {', '.join(ARTIFACTS)}")
    p.add_argument("--qat", action="store_true", help="also write tflite_qat_int8 (quantization-aware fine-tune)")
    p.add_argument("--qat-minutes", dest="export.qat_minutes", type=float, metavar="M",
                   help="wall-time budget of the QAT fine-tune (default: export.qat_minutes)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    config.add_config_args(p)
    return p


@fail_cleanly
def main(argv=None):
    args = parser().parse_args(argv)
    overrides = config.given_flags(args)
    cfg = config.load(args.config, overrides)
    if args.qat and "tflite_qat_int8" not in cfg.export.formats:
        cfg = config.load(args.config, overrides + [("export.formats", [*cfg.export.formats, "tflite_qat_int8"])])
    console.start_tensorflow(args.verbose)
    from export.run import export_all  # heavy imports after the config is checked
    export_all(cfg, progress=not args.quiet)
    return 0


if __name__ == "__main__":
    main()
