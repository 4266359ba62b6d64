"""One error type for every expected failure, and a main() wrapper that prints it on one line."""
import functools
import sys


class PipelineError(Exception):
    """An expected failure the user can fix: bad input, missing file, failed gate."""


def fail_cleanly(main):
    """Run `main`; turn a PipelineError into one line on stderr and exit status 1."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except PipelineError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper
