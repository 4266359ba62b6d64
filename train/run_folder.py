"""What `--resume` reads from a run folder, read without Keras: the folder is checked before TensorFlow starts
(and before any data is loaded), so a bad folder gets its one error line with no start-up noise."""
import json
import math
import re
from pathlib import Path

from pipeline.errors import PipelineError, first_line

RUN_MARKER = "run.json"
RUN_KIND = "cifar-edge train run"
EPOCH_ATTR = "cifar_edge_epochs_done"  # the backup's epoch count (train.callbacks.AtomicBackupAndRestore)
BACKUP = Path("backup") / "latest.weights.h5"


def _read_json(path, what):
    from pipeline import atomic
    try:
        with atomic.open_regular(path) as f:  # a FIFO would block forever: refused unread
            return json.loads(f.read().decode())
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: nested 200,000 deep
        raise PipelineError(f"{path}: unreadable {what} ({first_line(exc)})") from None


def read_marker(run_dir):
    """The run marker, or a PipelineError if `run_dir` is not a run folder this stage wrote."""
    path = Path(run_dir) / RUN_MARKER
    if not Path(run_dir).is_dir():
        raise PipelineError(f"{run_dir}: not a folder")
    if not path.exists():
        raise PipelineError(f"{run_dir}: not a run folder of `python -m train` (no {RUN_MARKER})")
    marker = _read_json(path, "run marker")
    if not isinstance(marker, dict) or marker.get("kind") != RUN_KIND or not marker.get("run_id"):
        raise PipelineError(f"{path}: not a run marker of `python -m train`")
    if not isinstance(marker["run_id"], str):
        raise PipelineError(f"{path}: \"run_id\" must be a string, got {marker['run_id']!r}")
    sha = marker.get("data_sha256")  # null: the run trained on `download`, which has no file to hash
    if sha is not None and not (isinstance(sha, str) and re.fullmatch("[0-9a-f]{64}", sha)):
        raise PipelineError(f"{path}: \"data_sha256\" must be a sha256 (64 hex digits) or null, got {sha!r}")
    return marker


def best_val_accuracy(run_dir):
    """The validation accuracy of the run's best.h5 (best.json), -inf before the first checkpoint."""
    path = Path(run_dir) / "best.json"
    if not path.exists():
        return -math.inf
    best = _read_json(path, "best.json")
    value = best.get("val_accuracy") if isinstance(best, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PipelineError(f"{path}: \"val_accuracy\" must be a number, got {value!r}")
    return float(value)


def backed_up_epochs(run_dir):
    """Epochs the run folder's backup holds (0 if none): where a resume continues from. A backup without the
    count this stage writes (an empty or foreign HDF5 file) is refused: Keras would load nothing into the model."""
    import h5py
    path = Path(run_dir) / BACKUP
    if not path.exists():
        return 0
    try:
        with h5py.File(path, "r") as f:
            epochs = f.attrs.get(EPOCH_ATTR)
    except OSError as exc:
        raise PipelineError(f"{path}: unreadable backup ({first_line(exc)})") from None
    if epochs is None or not str(epochs).isdigit() or int(epochs) < 1:
        raise PipelineError(f"{path}: not a backup `python -m train` wrote (no epoch count in it); remove the "
                            "backup folder to train the run again from epoch 1")
    return int(epochs)


def check_resumable(run_dir):
    """Everything a resume reads from the folder besides the config, so a damaged file stops it here.
    A finished run has nothing to resume: resuming it would train again from epoch 1 over its history."""
    run_dir = Path(run_dir)
    if (run_dir / "metrics.json").exists():
        raise PipelineError(f"{run_dir}: the run is finished (metrics.json); nothing to resume")
    best_val_accuracy(run_dir)
    backed_up_epochs(run_dir)
    history = run_dir / "history.csv"  # trimmed to the backup's epochs, then appended to: read as text
    try:
        if history.exists():
            from pipeline import atomic
            with atomic.open_regular(history) as f:
                f.read().decode()
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelineError(f"{history}: unreadable training history ({first_line(exc)})") from None
