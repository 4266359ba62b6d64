"""The umbrella CLI: `python -m pipeline <command>`. Stages run as `python -m train|export|evaluate`."""
import argparse
import sys

from pipeline.errors import fail_cleanly


def _cmd_eval_data(args):
    from pipeline import atomic, evalset
    from pipeline.data import resolve_source
    atomic.check_writable_dir(args.out)  # before the whole source is read
    n_test, n_calib, n_parity = evalset.build(resolve_source(args.source), args.out)
    print(f"wrote {n_test} test, {n_calib} calibration and {n_parity} parity images to {args.out}/")


def _cmd_data(args):
    import time
    from pipeline import config
    from pipeline.data import load_cifar10, resolve_source
    import numpy as np
    cfg = config.load(args.config)
    # Flag, then CIFAR10_DATA, then the config file.
    source = args.source or resolve_source(cfg.data.source)
    t0 = time.time()
    splits = load_cifar10(source)
    for name, split in splits.items():
        print(f"{name}: images {split.images.shape} {split.images.dtype}, "
              f"per class {np.bincount(split.labels, minlength=10).tolist()}")
    print(f"loaded in {time.time() - t0:.2f}s")


def _cmd_config(args):
    import json
    from pipeline import config
    if args.table:
        print("| key | default | meaning |\n| --- | --- | --- |")
        for dotted, default, meaning in config.describe():
            shown = json.dumps(default) if not isinstance(default, dict) else "{...}"
            print(f"| `{dotted}` | `{shown}` | {meaning} |")
        return
    print(json.dumps(config.from_args(args).to_dict(), indent=2))


def _cmd_artifacts(args):
    from pipeline.artifacts import ARTIFACTS
    print("| kind | format | runtime | precision | compute | gates | file | converted from | parity gate "
          "| same bytes on re-export | mobile bundle | mobile checks | integer I/O | metadata | app clients "
          "| per-layer error | profiler | default |\n" + "| --- " * 18 + "|")
    yes = lambda v: "yes" if v else "-"  # noqa: E731
    for r in ARTIFACTS.values():
        print(f"| `{r.name}` | {r.format} | {r.runtime} | {r.precision} | {r.compute} | {r.kind} | `{r.file}` "
              f"| {r.needs or 'checkpoint'} | `gates.{r.parity}` | {'yes' if r.deterministic else 'no'} "
              f"| {r.mobile or '-'} | {yes(r.mobile_checks)} | {yes(r.integer_io)} | {yes(r.metadata)} "
              f"| {', '.join(r.clients) or '-'} | {r.layer_error or '-'} "
              f"| {r.profiler or '-'} | {yes(r.default)} |")


COMMANDS = {}  # name -> (help, add_arguments(parser), run(args)): the library's own commands; the stages
# are not here, each runs as `python -m train|export|evaluate`


def register(name, help, add_arguments, run):
    COMMANDS[name] = (help, add_arguments, run)


def _builtin_commands():
    def data_args(p):
        p.add_argument("--config", default=None)
        p.add_argument("--source", default=None, help="data source (default: config / CIFAR10_DATA)")

    def eval_data_args(p):
        p.add_argument("--source", default=None, help="image-folder source (default: CIFAR10_DATA)")
        p.add_argument("--out", default="data")

    def config_args(p):
        from pipeline import config
        config.add_config_args(p)
        p.add_argument("--table", action="store_true", help="every key, its default and meaning (Markdown)")

    register("config", "print the resolved config (checked), or the table of every key", config_args, _cmd_config)
    register("artifacts", "print the table of artifact kinds (Markdown)", lambda p: None, _cmd_artifacts)
    register("data", "load (and cache) the data set and print its shape", data_args, _cmd_data)
    register("make-eval-data", "write the versioned test split, calibration and parity subsets", eval_data_args,
             _cmd_eval_data)
    try:
        from pipeline import predict
        register("predict", predict.HELP, predict.add_arguments, predict.run)
    except ImportError:
        pass


@fail_cleanly
def main(argv=None):
    _builtin_commands()
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_arguments, _) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    result = COMMANDS[args.command][2](args)
    sys.exit(result or 0)
