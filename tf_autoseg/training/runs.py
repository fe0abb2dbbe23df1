"""Run directories: the flags a run was started with, and whether it may resume or is finished.

A run directory (`--run_dir`) holds `flags.json`, written once when the run starts, and
`metrics.json`, written last. Running the same command again resumes the run; it must be the
same run, so every training flag but those in `RESUMABLE` must match `flags.json` (flags added
since, `ADDED`, are read at the value that trains as before): both are metadata of the flags'
table, `tf_autoseg.training.config`. Standard library only.
"""

import contextlib
import json
import os
import socket
from pathlib import Path

from tf_autoseg import atomic
from tf_autoseg.training.config import ADDED
from tf_autoseg.training.config import RESUMABLE
from tf_autoseg.training.config import upgrade


def record_flags(run_dir, flags):
    """Creates the run directory and its flags.json, once the run is known to start."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "flags.json").exists():
        atomic.write_json(run_dir / "flags.json", _plain(flags))
    return run_dir


def finished(output, optimisation, flags):
    """A sentence saying the run is finished (its step, model and export), or None, once the
    run directory is known to hold this run (its flags.json, `check_same_flags`) or none.

    A run (`output.run_dir`) is finished once its `metrics.json` (written last) records
    `optimisation.steps` steps, or the training seconds of `optimisation.minutes`; any number
    for a model that is never trained. A finished run is left as it is: raising `--steps` (or
    `--minutes`) continues it, and `python -m tf_autoseg.export` exports it again.

    Raises:
        ValueError: the run was started with other training flags (`flags`), or went past
            `--steps`.
    """
    run_dir = Path(output.run_dir)
    if (run_dir / "flags.json").exists():  # reads only: a resumed run must be the same run
        check_same_flags(run_dir / "flags.json", flags, ignored=RESUMABLE, added=ADDED)
    path = run_dir / "metrics.json"
    if not path.is_file():
        return None
    try:
        metrics = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not JSON ({error}); move it away to finish the run.") from None
    done, steps = int(metrics.get("steps", 0)), optimisation.steps
    if optimisation.train:
        spent = metrics.get("train_seconds", 0.0) >= 60 * (optimisation.minutes or float("inf"))
        if done < steps and not spent:
            return None
        check_steps(run_dir, steps, done)
    name = output.export_name or run_dir.resolve().name
    return (
        f"{run_dir} is already finished at step {done} of {steps}: model "
        f"{run_dir / 'model.keras'}, export {metrics.get('export') or 'none'}. Nothing was "
        "changed. Raise --steps (or --minutes) to train it further; export it again with: python -m "
        f"tf_autoseg.export --model={run_dir} --name={name} --output_dir={output.export_dir}"
    )


def check_steps(run_dir, steps, done):
    """Raises if the run in `run_dir` already went past `steps`."""
    if done > steps:
        raise ValueError(
            f"--steps={steps}: the run in {run_dir} already reached step "
            f"{done}. Give --steps={done} or more, or choose a new --run_dir."
        )


def _plain(flags):
    """A mapping of flag values as JSON holds them (tuples as lists)."""
    return {name: list(v) if isinstance(v, tuple) else v for name, v in flags.items()}


def check_same_flags(path, flags, ignored=(), added=None):
    """Raises if the run at `path` (flags.json) was started with other training flags.

    A resumed run must be the same run; flags listed in `ignored` (e.g. the
    number of steps, output folders) may change. `added` maps flags introduced
    after a run may have been recorded to the value that behaves as before: a
    flags.json without one of them is read as holding that value. Older names
    and "not given" values in flags.json read as today's (`config.upgrade`).
    """
    saved = {**(added or {}), **upgrade(json.loads(Path(path).read_text()))}
    changed = {
        name: (saved.get(name), value)
        for name, value in _plain(flags).items()
        if name not in ignored and saved.get(name) != value
    }
    if changed:
        details = ", ".join(f"--{n} was {a!r}, now {b!r}" for n, (a, b) in sorted(changed.items()))
        raise ValueError(
            f"{path.parent} holds a run started with other flags ({details}). "
            "Resume it with the same flags, or choose a new --run_dir."
        )


PROGRESS = "progress.json"


def record_progress(run_dir, step, **figures):
    """Records figures of the run at `step` (training seconds so far, the loss and mutual
    information of the last interval), read back when a run resumes there."""
    path = Path(run_dir) / PROGRESS
    recorded = _read_progress(path)
    recorded[str(int(step))] = {name: round(float(value), 6) for name, value in figures.items()}
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    atomic.write_json(path, recorded)


def progress(run_dir, step):
    """The figures recorded at `step` ({} for step 0 or when none were recorded)."""
    return _read_progress(Path(run_dir) / PROGRESS).get(str(int(step)), {})


def _read_progress(path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


LOCK = ".lock"
_HELD = {}  # run directories this process holds: resolved path -> nesting depth


def is_chief(distribution, environ=None):
    """Whether this process owns the run directory: the only process, or the chief of a
    MultiWorkerMirroredStrategy run (TF_CONFIG's "chief", else worker 0), as
    `experiment.is_chief` finds from the strategy. Read before TensorFlow loads, so the run
    directory is held before anything in it is read.
    """
    environ = os.environ if environ is None else environ
    if distribution not in ("auto", "multiworker"):
        return True
    try:
        cluster_config = json.loads(environ.get("TF_CONFIG") or "{}")
    except json.JSONDecodeError:
        return True  # refused, named, by the program's checks
    cluster, task = cluster_config.get("cluster", {}), cluster_config.get("task", {})
    if len(cluster.get("chief", [])) + len(cluster.get("worker", [])) <= 1:
        return True
    if "chief" in cluster:
        return task.get("type") == "chief"
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0


@contextlib.contextmanager
def held(run_dir, log=print):
    """Holds `run_dir` for this process: a lock file naming the owner's pid and host.

    Take it before reading anything in the run directory: a second process is refused while
    the owner lives, before it reads a checkpoint or flags.json that the owner may be
    replacing. A lock left by a dead process of this host (killed) is taken over, with a
    message. The lock goes when the block ends, and so does the run directory if this block
    created it and left it empty (a run refused for its data leaves nothing). Holding it
    again inside the block (the program, then the library) is a no-op.

    Raises:
        ValueError: another live process holds the run directory.
    """
    key = os.path.abspath(run_dir)
    if _HELD.get(key):
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    path = Path(run_dir) / LOCK
    created = [p for p in [Path(key), *Path(key).parents] if not p.exists()]
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    try:
        while True:
            try:
                handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    owner = json.loads(path.read_text())
                except (OSError, json.JSONDecodeError):
                    owner = {}
                if owner.get("host") == me["host"] and not _alive(owner.get("pid")):
                    log(f"{run_dir}: taking over the lock of process {owner.get('pid')}, "
                        "which is no longer running.")  # fmt: skip
                    path.unlink(missing_ok=True)
                    continue
                raise ValueError(
                    f"--run_dir={run_dir} is in use by process {owner.get('pid')} on "
                    f"{owner.get('host')} ({path}). Wait for it to finish, or choose another "
                    "--run_dir."
                ) from None
            with os.fdopen(handle, "w") as file:
                json.dump(me, file)
            break
    except BaseException:
        _remove_empty(created)
        raise
    _HELD[key] = 1
    try:
        yield
    finally:
        del _HELD[key]
        path.unlink(missing_ok=True)
        _remove_empty(created)


def _remove_empty(folders):
    """Removes the folders in `folders` (deepest first) that are empty."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _alive(pid):
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
