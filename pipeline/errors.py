"""One error type for every expected failure, and a main() wrapper that prints it on one line."""
import errno
import functools
import os
import re
import signal
import sys
import threading


def first_line(exc, limit=300):
    """An exception as one short line (some, like tarfile's or Keras', span several)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def printable(text):
    """`text` with every control character (C0, DEL, C1: below 0x20 and 0x7f-0x9f) written as a \\xNN escape,
    so a file name holding a carriage return, an ANSI escape or a NUL cannot rewrite the terminal line."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


class PipelineError(Exception):
    """An expected failure the user can fix: bad input, missing file, failed gate."""


# A full disk, a read-only folder, no permission: the machine's state, not a bug, and the user can fix it.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM})


def storage_error(exc, path=None):
    """For an OSError of STORAGE_ERRNOS, a PipelineError naming `path` (a writer's final file: it writes a temp
    path, so that file is unchanged), else the file the OSError names; None for any other exception."""
    if not isinstance(exc, OSError) or exc.errno not in STORAGE_ERRNOS:
        return None
    if path is not None:
        return PipelineError(f"{path}: cannot write it ({os.strerror(exc.errno)}); nothing was written")
    return PipelineError(f"{exc.filename or 'a file'}: {os.strerror(exc.errno)}")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is, as SIGINT raises KeyboardInterrupt: every cleanup that
    runs on Ctrl-C (a `with` block, subprocess.run killing its child, a temp folder removed) runs on it."""


def _raise_terminated(signum, frame):
    raise Terminated()


def terminate_like_interrupt(main):
    """Decorator: while `main` runs, SIGTERM (`kill PID`, a CI timeout, systemd stop) stops it the way Ctrl-C
    does (Terminated); the previous handler is put back afterwards. Only the main thread can set handlers:
    elsewhere `main` runs as it is."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            return main(*args, **kwargs)
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
        try:
            return main(*args, **kwargs)
        finally:
            signal.signal(signal.SIGTERM, previous)

    return wrapper


def fail_cleanly(main):
    """Run `main`; a PipelineError (or a full disk, a read-only folder: STORAGE_ERRNOS) becomes one line on stderr
    and exit status 1, an unexpected exception one line that says it is an internal error and where its trace
    was written (exit 2).
    Every line is printed through `printable`: no control character of a file name reaches the terminal."""

    def say(text):
        print(printable(text), file=sys.stderr)

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except PipelineError as exc:
            say(f"error: {exc}")
            sys.exit(1)
        except BrokenPipeError:  # the reader went away (`| head`): not an error of ours
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(141)
        except Terminated:
            say("error: terminated (SIGTERM); stopped like an interrupt")
            sys.exit(128 + signal.SIGTERM)
        except KeyboardInterrupt:
            say("error: interrupted")
            sys.exit(130)
        except Exception as exc:  # a bug of ours, not the user's input: say so, keep the trace
            if storage_error(exc) is not None:  # ...unless a disk filled up or is read-only where no writer named it
                say(f"error: {storage_error(exc)}")
                sys.exit(1)
            import tempfile
            import traceback
            with tempfile.NamedTemporaryFile("w", prefix="cifar-edge-trace-", suffix=".txt", delete=False) as f:
                traceback.print_exc(file=f)
            say(f"error: internal error ({type(exc).__name__}: {first_line(exc, 200)}); this is a bug, "
                f"the full trace is in {f.name}")
            sys.exit(2)

    return wrapper
