"""Run directories that survive a kill: atomic writes, checkpoints, resume.

Every file is written to a temporary name in the same folder and renamed
into place (`os.replace` is atomic on POSIX), so a process killed at any
point (SIGKILL included) leaves either the previous version or the new one,
never half a file. A checkpoint is a full `.keras` model with its optimizer
state; the step it was taken at is its name. The temporary files of a process
killed mid-write are hidden (a leading dot) and removed by the next run of the
same run directory (`remove_leftovers`).
"""

import json
import os
import re
import tempfile
from pathlib import Path

import keras

from tf_autoseg import model as _model  # noqa: F401 - registers the model and layers for loading

CHECKPOINT_DIR = "checkpoints"
_CHECKPOINT = re.compile(r"^ckpt-(\d{8})\.keras$")
# atomic_write's temporary names: "." + the file's name + "." + mkstemp's 8 random characters
# + ".tmp" + the suffix.
_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\.keras)?$")


def atomic_write(path, write, suffix=""):
    """Calls `write(tmp_path)` then renames the temporary file onto `path`.

    The temporary file lives beside `path` (same file system) and starts with
    a dot; it is removed if `write` fails.
    """
    path = Path(path)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(handle)
    try:
        write(tmp)
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; a plain open would not
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path, text):
    """Writes `text` to `path` atomically."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def atomic_write_json(path, value):
    """Writes `value` as indented JSON to `path` atomically."""
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def save_model(model, path):
    """Saves a `.keras` model (weights, config, optimizer state) atomically."""
    atomic_write(path, model.save, suffix=".keras")


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

    Only names `atomic_write` gives are removed. Call it from the process that owns the run
    (the chief), before it writes: another writer's temporary file would go too.

    Returns:
        The removed paths.
    """
    removed = []
    for folder in (Path(run_dir), Path(run_dir) / CHECKPOINT_DIR):
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                if _TEMPORARY.match(path.name) and path.is_file():
                    path.unlink(missing_ok=True)
                    removed.append(path)
    return removed


def load_checkpoint(path):
    """Loads a checkpoint, or raises a `ValueError` that names it and says what to do."""
    try:
        return keras.saving.load_model(path)
    except Exception as error:  # noqa: BLE001 - any failure to load is reported the same way
        raise ValueError(
            f"Checkpoint {path} is corrupt or incompatible with this version of tf_autoseg "
            f"({type(error).__name__}: {error}). Nothing was overwritten. Move it away to "
            "resume from the previous checkpoint, or start a new --run_dir."
        ) from error


class CheckpointCallback(keras.callbacks.Callback):
    """Saves a checkpoint at the end of every epoch (= every checkpoint interval).

    Keeps the `keep` most recent checkpoints. Only the chief writes (on a
    multi-worker run `is_chief` is False on the other workers).
    """

    def __init__(self, run_dir, keep=2, is_chief=True):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.keep = keep
        self.is_chief = is_chief

    def on_epoch_end(self, epoch, logs=None):
        if not self.is_chief:
            return
        step = int(self.model.optimizer.iterations)
        path = checkpoint_path(self.run_dir, step)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_model(self.model, path)
        for _, old in checkpoints(self.run_dir)[: -self.keep]:
            old.unlink()


def check_same_flags(path, flags, ignored=(), added=None):
    """Raises if the run at `path` (flags.json) was started with other training flags.

    A resumed run must be the same run; flags listed in `ignored` (e.g. the
    number of steps, output folders) may change. `added` maps flags introduced
    after a run may have been recorded to the value that behaves as before: a
    flags.json without one of them is read as holding that value.
    """
    saved = {**(added or {}), **json.loads(Path(path).read_text())}
    changed = {
        name: (saved.get(name), value)
        for name, value in flags.items()
        if name not in ignored and saved.get(name) != value
    }
    if changed:
        details = ", ".join(f"--{n} was {a!r}, now {b!r}" for n, (a, b) in sorted(changed.items()))
        raise ValueError(
            f"{path.parent} holds a run started with other flags ({details}). "
            "Resume it with the same flags, or choose a new --run_dir."
        )
