"""The run marker of a run folder, read without Keras: `--resume` checks a folder before TensorFlow starts,
so a bad folder gets its one error line with no start-up noise."""
import json
from pathlib import Path

from pipeline.errors import PipelineError

RUN_MARKER = "run.json"
RUN_KIND = "cifar-edge train run"


def read_marker(run_dir):
    """The run marker, or a PipelineError if `run_dir` is not a run folder this stage wrote."""
    path = Path(run_dir) / RUN_MARKER
    if not Path(run_dir).is_dir():
        raise PipelineError(f"{run_dir}: not a folder")
    try:
        marker = json.loads(path.read_text())
    except FileNotFoundError:
        raise PipelineError(f"{run_dir}: not a run folder of `python -m train` (no {RUN_MARKER})") from None
    except (OSError, ValueError) as exc:
        raise PipelineError(f"{path}: unreadable run marker ({exc})") from None
    if not isinstance(marker, dict) or marker.get("kind") != RUN_KIND or not marker.get("run_id"):
        raise PipelineError(f"{path}: not a run marker of `python -m train`")
    return marker


def check_resumable(run_dir):
    """A finished run has nothing to resume: resuming it would train again from epoch 1 over its history."""
    if (Path(run_dir) / "metrics.json").exists():
        raise PipelineError(f"{run_dir}: the run is finished (metrics.json); nothing to resume")
