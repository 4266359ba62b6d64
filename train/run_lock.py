"""One `python -m train` per run folder: an exclusive lock on RUN_DIR/.train.lock for the whole run.

Two processes training into one folder (two `--resume` of the same run, or two fresh runs given the
same `--run-name`) would both append epochs to history.csv and overwrite each other's checkpoints.
The lock is fcntl.flock, taken without waiting: the second process is refused at once, with one line
naming the holder (its pid and host, written into the lock file). The kernel drops the lock when its
holder dies (even by kill -9), so a stale lock file never blocks a later resume; a run that ends
removes it.
"""
import contextlib
import errno
import fcntl
import os
import socket
import stat
from pathlib import Path

from pipeline.errors import PipelineError

LOCK_FILE = ".train.lock"


def _holder(fd):
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "holder unknown: it has not written its pid yet"


def _acquire(run_dir, path):
    """The locked descriptor of the lock file that is on disk now (a holder that just finished may have
    unlinked the one we opened: then open it again)."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
        except OSError as exc:  # a symbolic link or folder planted there, no permission, ...
            raise PipelineError(f"{path}: cannot open the run lock ({exc.strerror or exc}); refused, "
                                "nothing was changed") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise PipelineError(f"{path}: the run lock is not a regular file; refused, nothing was changed")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise PipelineError(f"{path}: cannot lock the run folder ({exc.strerror or exc})") from None
                raise PipelineError(f"{run_dir}: another `python -m train` is training in this run folder "
                                    f"({_holder(fd)}); refused, nothing was changed") from None
            try:
                on_disk = os.stat(path, follow_symlinks=False)
            except FileNotFoundError:
                on_disk = None
            mine = os.fstat(fd)
            if on_disk is not None and (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # locked a file its holder had just removed: take the one on disk instead


@contextlib.contextmanager
def run_lock(run_dir, fresh=False):
    """Hold the run folder's lock for the `with` block (the folder is made if missing, and removed again
    if it is still empty at the end). `fresh`: a new run, refused if the folder holds anything but the
    lock (a run that finished while this one was starting). PipelineError if another process holds it."""
    run_dir = Path(run_dir)
    made = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    try:
        fd = _acquire(run_dir, path)
    except BaseException:
        if made:
            with contextlib.suppress(OSError):
                run_dir.rmdir()
        raise
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
        if fresh:
            others = sorted(p.name for p in run_dir.iterdir() if p.name != LOCK_FILE)
            if others:
                raise PipelineError(f"{run_dir}: folder exists and is not empty ({', '.join(others[:3])}); use "
                                    f"--resume {run_dir} (if it is a run) or another --run-name")
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # while still holding it: a process waiting on this file then opens the next one
        os.close(fd)
        if made:
            with contextlib.suppress(OSError):
                run_dir.rmdir()  # only if empty: a run that failed before writing anything leaves nothing
