"""One error type for every expected failure, and a main() wrapper that prints it on one line."""
import functools
import sys


def first_line(exc, limit=300):
    """An exception as one short line (some, like tarfile's or Keras', span several)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


class PipelineError(Exception):
    """An expected failure the user can fix: bad input, missing file, failed gate."""


def fail_cleanly(main):
    """Run `main`; a PipelineError becomes one line on stderr and exit status 1, an unexpected
    exception one line that says it is an internal error and where its trace was written (exit 2)."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except PipelineError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(1)
        except BrokenPipeError:  # the reader went away (`| head`): not an error of ours
            import os
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(141)
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            sys.exit(130)
        except Exception as exc:  # a bug of ours, not the user's input: say so, keep the trace
            import tempfile
            import traceback
            with tempfile.NamedTemporaryFile("w", prefix="cifar-edge-trace-", suffix=".txt", delete=False) as f:
                traceback.print_exc(file=f)
            print(f"error: internal error ({type(exc).__name__}: {first_line(exc, 200)}); this is a bug, "
                  f"the full trace is in {f.name}", file=sys.stderr)
            sys.exit(2)

    return wrapper
