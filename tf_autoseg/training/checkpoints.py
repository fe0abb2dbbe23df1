"""Checkpoints that survive a kill: saved whole (`tf_autoseg.atomic`), found, resumed.

A checkpoint is a full `.keras` model with its optimizer state; the step it was taken at is
its name. The temporary files of a process killed mid-write are removed by the next run of the
same run directory (`remove_leftovers`).
"""

import re
from pathlib import Path

import keras

from tf_autoseg import atomic
from tf_autoseg.modeling import saving

CHECKPOINT_DIR = "checkpoints"
_CHECKPOINT = re.compile(r"^ckpt-(\d{8})\.keras$")


def save_model(model, path):
    """Saves a `.keras` model (weights, config, optimizer state) atomically."""
    atomic.write(path, model.save, suffix=".keras")


def checkpoint_path(run_dir, step):
    return Path(run_dir) / CHECKPOINT_DIR / f"ckpt-{int(step):08d}.keras"


def checkpoints(run_dir):
    """(step, path) of every complete checkpoint in `run_dir`, oldest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CHECKPOINT.match(p.name))]
    return sorted(found)


def remove_leftovers(run_dir):
    """Removes the temporary files a killed process left in `run_dir` and its checkpoints.

    Only names `tf_autoseg.atomic.write` gives are removed. Call it from the process that owns the run
    (the chief), before it writes: another writer's temporary file would go too.

    Returns:
        The removed paths.
    """
    removed = []
    for folder in (Path(run_dir), Path(run_dir) / CHECKPOINT_DIR):
        for path in atomic.leftovers(folder):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def load_checkpoint(path):
    """Loads a checkpoint, or raises a `ValueError` that names it and says what to do.

    A checkpoint that another process removed or replaced while it was read (a second
    training of the same run directory, or a worker reading what its chief rotates) is not
    called corrupt: the error says it changed, and that nothing needs to be moved.
    """
    before = _identity(path)
    try:
        return saving.load(path)
    except Exception as error:  # noqa: BLE001 - any failure to load is reported the same way
        if before is None or _identity(path) != before:
            raise ValueError(
                f"Checkpoint {path} was removed or replaced by another process while it was "
                f"read ({type(error).__name__}). Is another training of {Path(path).parent.parent} "
                "running? Nothing was changed: run the same command again once it has finished."
            ) from error
        raise ValueError(
            f"Checkpoint {path} is corrupt or incompatible with this version of tf_autoseg "
            f"({type(error).__name__}: {error}). Nothing was overwritten. Move it away to "
            "resume from the previous checkpoint, or start a new --run_dir."
        ) from error


class CheckpointCallback(keras.callbacks.Callback):
    """Saves a checkpoint at the end of every epoch (= every checkpoint interval).

    Keeps the `keep` most recent checkpoints. Only the chief writes (on a
    multi-worker run `is_chief` is False on the other workers). An epoch cut short (a time
    budget spent) leaves no checkpoint: a resumed run starts at a whole interval, where its
    data, epochs and schedule line up.
    """

    def __init__(self, run_dir, keep=2, is_chief=True, every=None):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.keep = keep
        self.is_chief = is_chief
        self.every = every

    def on_epoch_end(self, epoch, logs=None):
        step = int(self.model.optimizer.iterations)
        if not self.is_chief or (self.every and step % self.every):
            return
        path = checkpoint_path(self.run_dir, step)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_model(self.model, path)
        for _, old in checkpoints(self.run_dir)[: -self.keep]:
            old.unlink()


def _identity(path):
    """(device, inode, size, modification time) of `path`, or None when it is gone: a file
    replaced by a rename, rewritten or removed has another identity."""
    try:
        stat = Path(path).stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns
