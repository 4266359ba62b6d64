"""One config for every stage: pipeline.toml, overridden by CLI flags, written next to outputs.

Flags are declared with `dest="section.key"`; `apply_args` copies every flag the user
gave over the file's value. `--set section.key=VALUE` overrides any key (VALUE is
parsed as TOML, so numbers, booleans and lists keep their types).
"""
import argparse
import copy
import tomllib
from pathlib import Path

from pipeline import atomic
from pipeline.errors import PipelineError

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "pipeline.toml"


def load(path=None):
    path = Path(path or DEFAULT_CONFIG)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise PipelineError(f"{path}: config file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PipelineError(f"{path}: invalid TOML ({exc})") from None
    except OSError as exc:  # a folder, no permission, ...
        raise PipelineError(f"{path}: cannot read config ({exc.strerror or exc})") from None


def set_key(cfg, dotted, value):
    *parents, leaf = dotted.split(".")
    node = cfg
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise PipelineError(f"config key {dotted!r}: {p!r} is not a section")
    node[leaf] = value


def _parse_set(item):
    if "=" not in item:
        raise PipelineError(f"--set {item!r}: expected section.key=VALUE")
    key, raw = item.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word is a string
    return key.strip(), value


def add_config_args(parser: argparse.ArgumentParser):
    parser.add_argument("--config", default=None, help="config file (default: pipeline.toml)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override any config key; repeatable")


def from_args(args):
    """The resolved config: file, then --set items, then every dotted flag that was given."""
    cfg = copy.deepcopy(load(getattr(args, "config", None)))
    for item in getattr(args, "set", None) or []:
        set_key(cfg, *_parse_set(item))
    for dest, value in vars(args).items():
        if "." in dest and value is not None:
            set_key(cfg, dest, value)
    return cfg


def write_resolved(cfg, folder):
    """Record the config an output was made with, beside it."""
    atomic.write_json(Path(folder) / "config.resolved.json", cfg)


def project_path(p):
    """Relative paths in the config are relative to the project root, not the cwd."""
    p = Path(p).expanduser()
    return p if p.is_absolute() else ROOT / p
