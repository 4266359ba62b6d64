"""Write files and folders so a reader never sees a half-written one: temp path, then rename."""
import contextlib
import hashlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

from pipeline.errors import storage_error


@contextlib.contextmanager
def atomic_path(final, suffix=""):
    """Yield a temp path beside `final`; rename it over `final` only if the block succeeds.

    Works for files and folders. The temp name keeps `suffix` (e.g. ".h5") because
    some writers pick the format from the extension. A folder replaces the old one through
    `publish_dir`: a kill at any moment leaves the old folder or the new one, whole (after
    `recover_dir`, where the kernel cannot swap two folders in one step).
    """
    final = Path(final)
    tmp = staging_dir(final)  # `.NAME.staging-PID-*`: recover_dir(final) removes it after a kill
    target = tmp / (final.name + suffix if suffix and not final.name.endswith(suffix) else final.name)
    try:
        yield target
        if target.is_dir() or (final.is_dir() and not final.is_symlink()):
            publish_dir(target, final)  # a folder: swapped in one step, the old one kept until then
        else:
            os.replace(target, final)
    except OSError as exc:  # a full disk mid-write: name the file the user asked for, not our temp path
        error = storage_error(exc, final)
        if error is None:
            raise
        raise error from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_writable_dir(folder):
    """Refuse (PipelineError, before any work) an output folder that cannot be made or written: a file in
    its place or above it, a read-only disk, no permission. Creates nothing: a temp file is written and removed
    in the folder, or in its nearest existing parent when it does not exist yet."""
    from pipeline.errors import PipelineError
    folder = probe = Path(folder)
    while not (probe.exists() or probe.is_symlink()) and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise PipelineError(f"{folder}: output folder is not writable ({probe} is not a folder); nothing was "
                            "written")
    try:
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise PipelineError(f"{folder}: output folder is not writable ({exc.strerror or exc}); nothing was "
                            "written") from None


def check_free_space(folder, needed, what):
    """Refuse (PipelineError) to start writing `what` (about `needed` bytes) into `folder` with less free space
    than twice that: HDF5 writing onto a full disk leaves its library in a state that crashes the process
    (SIGSEGV at exit), so checkpoints are not left to find out."""
    from pipeline.errors import PipelineError
    free = shutil.disk_usage(folder).free
    if free < 2 * needed:
        raise PipelineError(f"{folder}: only {free:,} bytes free on its disk, {what} needs about {needed:,}; "
                            "free some space (nothing was written)")


def read_capped(f, cap, chunk=1 << 20):
    """The bytes of file object `f`, or None if it holds more than `cap`. Read in chunks, so the cap counts
    bytes actually read: one zipfile read() of a member whose header understates its size decompresses the
    whole member into memory first (a 1 MB zip stating 1 KB held 1 GB)."""
    parts, size = [], 0
    while size <= cap:
        block = f.read(min(chunk, cap + 1 - size))
        if not block:
            return b"".join(parts)
        parts.append(block)
        size += len(block)
    return None


def write_bytes(final, data: bytes):
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def write_text(final, text: str):
    write_bytes(final, text.encode())


def write_png(final, fig, **savefig_options):
    """A matplotlib figure as a PNG, renamed into place (a report never shows half a chart)."""
    with atomic_path(final, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, **savefig_options)


def write_json(final, obj):
    write_text(final, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def _not_regular(path, mode):
    from pipeline.errors import PipelineError
    kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else \
        "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else \
        "a folder" if stat.S_ISDIR(mode) else "a special file"
    return PipelineError(f"{path}: is {kind}, not a regular file; refused (it was not read)")


def check_regular(path):
    """`path` (links followed) if it is a regular file; a PipelineError naming it if it is a FIFO, socket,
    device or folder, which would block forever or read as empty. FileNotFoundError if it is missing."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise _not_regular(path, mode)
    return path


def open_regular(path):
    """A binary file object of a regular file, checked before and after opening (O_NONBLOCK, so a FIFO
    swapped in between cannot block the open; fstat then refuses it)."""
    check_regular(path)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _not_regular(path, mode)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def sha256_file(path, chunk=1 << 20) -> str:
    """sha256 of a regular file; a FIFO, socket or device is refused (PipelineError), never read."""
    h = hashlib.sha256()
    with open_regular(path) as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha256_tree(path) -> str:
    """Content hash of a file, or of a folder (relative paths and contents, in sorted order). Only regular
    files and folders are read: a FIFO, socket or device anywhere in the tree is refused (PipelineError)."""
    path = Path(path)
    if not path.is_dir():
        return sha256_file(path)
    h = hashlib.sha256()
    files = []
    for p in path.rglob("*"):
        try:
            mode = os.stat(p).st_mode
        except FileNotFoundError:  # a dangling link: nothing to read, as before
            continue
        if stat.S_ISREG(mode):
            files.append(p)
        elif not stat.S_ISDIR(mode):
            raise _not_regular(p, mode)
    for f in sorted(files):
        h.update(str(f.relative_to(path)).encode() + b"\0")
        h.update(sha256_file(f).encode())
    return h.hexdigest()


# ---------------------------------------------------------------- a whole folder at once

_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(a, b):
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where not supported."""
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    ok = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0
    return ok


def check_replaceable(folder, marker_name):
    """Refuse (PipelineError, before any work) to replace `folder` unless it is new, empty, or was
    made by the tool that replaces it: it holds `marker_name` (manifest.json for an export,
    model_spec.json for a mobile bundle). A regular file or a symbolic link there is refused too:
    publishing swaps the whole folder, so anything else in it would be deleted."""
    from pipeline.errors import PipelineError
    folder = Path(folder)
    if folder.is_symlink():
        raise PipelineError(f"{folder}: is a symbolic link; give the output folder itself (nothing was written)")
    if not folder.exists():
        return
    if not folder.is_dir():
        raise PipelineError(f"{folder}: is a file, not an output folder; refused (nothing was written)")
    marker = folder / marker_name
    if marker.is_file() and not marker.is_symlink():
        return
    try:
        entries = sorted(p.name for p in folder.iterdir())
    except OSError as exc:
        raise PipelineError(f"{folder}: cannot list the output folder ({exc.strerror or exc})") from None
    if entries:
        shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
        raise PipelineError(f"{folder}: holds files no earlier run made ({shown}; no {marker_name}); it would "
                            "be replaced whole: give a new or empty folder (nothing was written)")


def staging_dir(final, kind="staging"):
    """A new hidden folder beside `final` to build the next version of it in."""
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{final.name}.{kind}-{os.getpid()}-", dir=final.parent))
    except OSError as exc:  # a file where a folder should be, a read-only disk, no permission
        from pipeline.errors import PipelineError
        raise PipelineError(f"{final.parent}: cannot write there ({exc.strerror or exc}); nothing was "
                            "written") from None


def publish_dir(staging, final):
    """Make `staging` the folder `final` in one step, so a reader (or a kill -9) sees either the old
    folder whole or the new one whole. The old one is removed afterwards. Where the kernel cannot
    swap two folders, the old one is renamed aside first, and `recover_dir` puts it back if the
    process dies between the two renames."""
    staging, final = Path(staging), Path(final)
    if not (final.exists() or final.is_symlink()):
        os.replace(staging, final)
        return
    if _exchange(staging, final):
        if staging.is_dir() and not staging.is_symlink():  # staging now holds the old version
            shutil.rmtree(staging, ignore_errors=True)
        else:  # the old one was a file or a link: never leave it behind as a stale staging entry
            staging.unlink(missing_ok=True)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-{os.getpid()}-", dir=final.parent))
    os.replace(final, aside / "old")
    os.replace(staging, final)
    shutil.rmtree(aside, ignore_errors=True)


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_dir(final):
    """Clean what a killed publish left beside `final`: staging folders of dead processes are removed,
    and an old version set aside (fallback path) is put back if `final` itself is missing."""
    final = Path(final)
    if not final.parent.is_dir():
        return []
    removed = []
    for kind in ("old", "staging"):
        for p in sorted(final.parent.glob(f".{final.name}.{kind}-*")):
            try:  # .NAME.KIND-PID-random (NAME itself may hold dashes)
                pid = int(p.name[len(f".{final.name}.{kind}-"):].split("-")[0])
            except ValueError:
                continue
            if pid != os.getpid() and _pid_alive(pid):
                continue  # another export is still working there
            if kind == "old" and not final.exists() and (p / "old").is_dir():
                os.replace(p / "old", final)
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
    return removed
